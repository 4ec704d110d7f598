// An unmodified OpenAI client talking to `hat run-device <bundle> --cloud ws://… --serve 8080`:
// `node --import tsx examples/openai-client.ts` (HAT_BASE_URL overrides the address).
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.HAT_BASE_URL ?? 'http://127.0.0.1:8080/v1', apiKey: 'unused' });

const [model] = (await client.models.list()).data;
const stream = await client.chat.completions.create({
  model: model.id,
  messages: [{ role: 'user', content: 'In the beginning God created the heaven and the earth.' }],
  temperature: 0,
  stream: true,
});
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '');
process.stdout.write('\n');
