// hat as a library: run from the repository root with `node --import tsx examples/library.ts`.
import { fileURLToPath } from 'node:url';
import { HatCloud, HatDevice } from 'hat';

const split = fileURLToPath(new URL('../fixtures/default-split', import.meta.url));

// The cloud's middle part, in this process for the example (elsewhere: `hat serve-cloud <split-dir>`).
const cloud = await HatCloud.start(split);
// The device: input/output parts, adapter and tokenizer stay loaded; the prompt never leaves this process.
const device = await HatDevice.open(split, { cloud: cloud.url });
try {
  for await (const piece of device.stream('And God said', { maxTokens: 32 })) process.stdout.write(piece);
  process.stdout.write('\n');

  const chat = { messages: [{ role: 'user', content: 'The LORD is my shepherd; I shall not want.' }] };
  const answer = await device.generate(chat, { maxTokens: 48, temperature: 0 });
  console.log(answer.text);
  console.log(`${answer.completionTokens} tokens (${answer.finishReason}),`,
    `${answer.metrics?.tokensPerRound} per cloud round, ${answer.metrics?.bytesUp} bytes up`);
} finally {
  await device.close();
  await cloud.close();
}
