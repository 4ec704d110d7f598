/**
 * The device's OpenAI-compatible API as an app meets it: the official `openai` client against a real
 * `hat run-device --serve` process and a real `hat serve-cloud` process on the shipped default split, the device
 * talking to the cloud through a relay that records everything it sends. Greedy answers are held to `hat generate`
 * on the unsplit model for the same prompt ids (after the chat template).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { HAT_BIN, spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { loadChatTemplate } from '../../src/api/chat-template.ts';
import { readManifest, splitTokenizer } from '../../src/runtime/split-dir.ts';
import { continuationText } from '../../src/runtime/tokenizer.ts';
import { recordingRelay, spawnDeviceServer, type DeviceServer, type Relay } from '../helpers/openai-device.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const run = promisify(execFile);
const split = join(repoRoot, 'fixtures', 'default-split');
const model = join(repoRoot, 'fixtures', 'default');
const skip =
  existsSync(join(split, 'manifest.json')) && existsSync(join(model, 'model.onnx'))
    ? false
    : 'SKIPPED: fixtures/default-split or fixtures/default is missing';
const MODEL = 'default-split';
const CHAT = 'In the beginning God created the heaven and the earth.';
const PROMPT = 'And God said';
const MAX = 48;

interface Reference {
  ids: number[];
  text: string;
  promptIds: number[];
  stopReason: string;
}

let cloud: SpawnedCloud;
let relay: Relay;
let device: DeviceServer;
let client: OpenAI;
const tokenizer = skip ? undefined : splitTokenizer(split, readManifest(split));
const references: { chat?: Reference; completion?: Reference } = {};

async function hatGenerate(args: string[]): Promise<Reference> {
  const command = [HAT_BIN, 'generate', model, ...args, '--max-new-tokens', String(MAX), '--json'];
  const { stdout } = await run(process.execPath, command, { cwd: repoRoot, maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Reference;
}

/** The text and token count a stop string leaves of a reference: up to the stop, and the tokens it took. */
function cutAtStop(reference: Reference, stop: string): { text: string; tokens: number } {
  const textOf = (k: number) => continuationText(tokenizer!, reference.promptIds, reference.ids.slice(0, k));
  let k = 1;
  while (!textOf(k).includes(stop)) {
    if (k >= reference.ids.length)
      throw new Error(`stop ${JSON.stringify(stop)} is not in the reference ${JSON.stringify(reference.text)}`);
    k++;
  }
  return { text: reference.text.slice(0, reference.text.indexOf(stop)), tokens: k };
}

before(async () => {
  if (skip) return;
  cloud = await spawnCloud(split);
  relay = await recordingRelay(cloud.url);
  // fp32 on the wire is bit-faithful, so greedy output must equal the full model's token for token.
  device = await spawnDeviceServer(split, relay.url, ['--wire', 'fp32', '--max-queue', '1']);
  client = new OpenAI({ baseURL: device.baseURL, apiKey: 'not-needed', maxRetries: 0 });
  const chatText = loadChatTemplate(split)!.render([{ role: 'user', content: CHAT }]);
  assert.equal(chatText, `<|bos|>${CHAT}<|eos|><|bos|>`);
  const chatIds = tokenizer!.encode(chatText, false);
  [references.chat, references.completion] = await Promise.all([
    hatGenerate(['--prompt-ids', chatIds.join(',')]),
    hatGenerate(['--prompt', PROMPT]),
  ]);
});

after(async () => {
  await device?.stop();
  await relay?.close();
  await cloud?.stop();
});

const finishOf = (reference: Reference) => (reference.stopReason === 'stop-token' ? 'stop' : 'length');
const user = [{ role: 'user' as const, content: CHAT }];
const greedy = { model: MODEL, temperature: 0, max_tokens: MAX };
const getJson = async <T>(url: string): Promise<T> => (await (await fetch(url)).json()) as T;
type HatField = { hat: Record<string, number> };

test("chat: hat generate's greedy continuation of the templated prompt, usage, HAT metrics", { skip }, async () => {
  const reference = references.chat!;
  const answer = await client.chat.completions.create({ ...greedy, messages: user });
  assert.equal(answer.object, 'chat.completion');
  assert.equal(answer.model, MODEL);
  assert.equal(answer.choices.length, 1);
  assert.equal(answer.choices[0].message.role, 'assistant');
  assert.equal(answer.choices[0].message.content, reference.text);
  assert.equal(answer.choices[0].finish_reason, finishOf(reference));
  const { prompt_tokens, completion_tokens, total_tokens } = answer.usage!;
  assert.deepEqual(
    { prompt_tokens, completion_tokens, total_tokens },
    {
      prompt_tokens: reference.promptIds.length,
      completion_tokens: reference.ids.length,
      total_tokens: reference.promptIds.length + reference.ids.length,
    },
  );
  const { hat } = answer as unknown as HatField;
  for (const key of ['ttft_ms', 'rounds', 'tokens_per_round', 'bytes_up', 'bytes_down', 'queued_ms', 'connect_ms']) {
    assert.equal(typeof hat[key], 'number', key);
  }
  assert.ok(hat.bytes_up > 0 && hat.bytes_down > 0 && hat.rounds > 0);
});

test('chat, streamed: role first, deltas join to the same text, finish_reason, usage', { skip }, async () => {
  const reference = references.chat!;
  const stream = await client.chat.completions.create({
    ...greedy,
    messages: user,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
  assert.equal(text, reference.text);
  assert.ok(chunks.length > 3, `streamed in ${chunks.length} chunks`);
  const finished = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(finished.length, 1);
  assert.equal(finished[0].choices[0].finish_reason, finishOf(reference));
  assert.equal(typeof (finished[0] as unknown as HatField).hat.ttft_ms, 'number');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage?.completion_tokens, reference.ids.length);
  assert.equal(last.usage?.prompt_tokens, reference.promptIds.length);
  for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.usage, null);
});

test('completions, whole and streamed (raw SSE ends with data: [DONE]), equal hat generate', { skip }, async () => {
  const reference = references.completion!;
  const answer = await client.completions.create({ ...greedy, prompt: PROMPT });
  assert.equal(answer.object, 'text_completion');
  assert.equal(answer.choices[0].text, reference.text);
  assert.equal(answer.choices[0].finish_reason, finishOf(reference));
  assert.equal(answer.usage?.prompt_tokens, reference.promptIds.length);
  assert.equal(answer.usage?.completion_tokens, reference.ids.length);

  const stream = await client.completions.create({ ...greedy, prompt: PROMPT, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, reference.text);

  const raw = await fetch(`${device.baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: 4, stream: true }),
  });
  assert.match(raw.headers.get('content-type') ?? '', /^text\/event-stream/);
  const events = (await raw.text()).split('\n\n').filter(Boolean);
  assert.equal(events[events.length - 1], 'data: [DONE]');
  for (const event of events.slice(0, -1)) assert.match(event, /^data: \{/);
});

test("max_tokens and stop are exact: text and token counts cut where hat generate's says", { skip }, async () => {
  const reference = references.completion!;
  assert.ok(reference.ids.length > 10, 'the reference is long enough to cut');
  const five = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 5 });
  assert.equal(five.choices[0].text, continuationText(tokenizer!, reference.promptIds, reference.ids.slice(0, 5)));
  assert.equal(five.usage?.completion_tokens, 5);
  assert.equal(five.choices[0].finish_reason, 'length');

  // A stop string inside a token's text, one over several tokens (whose start appears earlier), a common word.
  // (Pinned on the default model's greedy text for this prompt: ' unto him, Behold, I will not be a man, nor his …'.)
  const cuts = {
    nto: ' u',
    ', nor his': ' unto him, Behold, I will not be a man',
    ' not': ' unto him, Behold, I will',
  };
  for (const [stop, pinned] of Object.entries(cuts)) {
    const expected = cutAtStop(reference, stop);
    assert.equal(expected.text, pinned);
    const whole = await client.completions.create({ ...greedy, prompt: PROMPT, stop: [stop] });
    assert.equal(whole.choices[0].text, expected.text, `stop ${JSON.stringify(stop)}`);
    assert.equal(whole.choices[0].finish_reason, 'stop');
    assert.equal(whole.usage?.completion_tokens, expected.tokens);
    const chat = await client.chat.completions.create({
      ...greedy,
      messages: user,
      stop,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of chat) {
      text += chunk.choices[0]?.delta.content ?? '';
      usage = chunk.usage ?? usage;
    }
    const chatReference = references.chat!;
    if (chatReference.text.includes(stop)) {
      const cut = cutAtStop(chatReference, stop);
      assert.equal(text, cut.text);
      assert.equal(usage?.completion_tokens, cut.tokens);
    } else {
      assert.equal(text, chatReference.text);
    }
  }
});

test("requests queue one at a time and never mix; past the queue's bound a request gets 429", { skip }, async () => {
  relay.delayMs = QUEUE_DELAY_MS; // slow rounds, so the first request is still generating when the third arrives
  try {
    await queueing();
  } finally {
    relay.delayMs = 0;
  }
});

const QUEUE_DELAY_MS = 100;

async function queueing(): Promise<void> {
  const chat = client.chat.completions.create({ ...greedy, messages: user });
  const completion = client.completions.create({ ...greedy, prompt: PROMPT });
  // --max-queue 1: one generating, one waiting, the third is refused.
  await waitFor(async () => (await getJson<{ waiting: number }>(`${device.origin}/health`)).waiting === 1, {
    what: 'one request generating and one queued',
  });
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 2 }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.RateLimitError, String(error));
    assert.equal((error as InstanceType<typeof OpenAI.APIError>).code, 'queue_full');
    return true;
  });
  const [a, b] = await Promise.all([chat, completion]);
  assert.equal(a.choices[0].message.content, references.chat!.text);
  assert.equal(b.choices[0].text, references.completion!.text);
  // The one that waited (sent together, they may arrive in either order) waited for the other's generation: at least
  // its welcome, a prefill result and a round, each held QUEUE_DELAY_MS by the relay.
  const queued = Math.max(...[a, b].map((r) => (r as unknown as HatField).hat.queued_ms));
  assert.ok(queued >= QUEUE_DELAY_MS, `queued ${queued} ms`);
}

test('a client that disconnects mid-stream cancels its generation and frees its cloud session', { skip }, async () => {
  // Slow verification rounds, so the stream is certainly cut in the middle, and each round the device might start
  // before it notices the closed connection takes 400 ms.
  relay.delayMs = 400;
  try {
    const abort = new AbortController();
    const stream = await client.completions.create(
      { ...greedy, prompt: PROMPT, stream: true },
      { signal: abort.signal },
    );
    const cloudHealth = `${cloud.url.replace('ws', 'http')}/health`;
    const sessions = async () => (await getJson<{ sessions: number }>(cloudHealth)).sessions;
    let pieces = 0;
    // The SDK ends the iteration quietly once its signal aborts (and closes the connection).
    for await (const chunk of stream) {
      if (chunk.choices[0]?.text) {
        pieces++;
        abort.abort();
      }
    }
    assert.ok(pieces >= 1);
    const sentAtAbort = relay.messagesUp;
    await waitFor(async () => (await sessions()) === 0, { what: 'the cloud session to close' });
    await waitFor(async () => (await getJson<{ running: number }>(`${device.origin}/health`)).running === 0, {
      what: 'the device to stop generating',
    });
    // The round in flight and the goodbye went up after the abort (2 when measured), a round or two more where the
    // device is slow to notice the closed connection — not the rest of the 48 tokens (about 18 more rounds).
    assert.ok(relay.messagesUp - sentAtAbort <= 5, `${relay.messagesUp - sentAtAbort} messages after the abort`);
  } finally {
    relay.delayMs = 0;
  }
  const after = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 5 });
  assert.equal(after.usage?.completion_tokens, 5);
});

test('a client that goes away while the cloud session opens frees the request slot at once', { skip }, async () => {
  relay.delayMs = 20_000; // the welcome (and every result) comes 20 s late
  try {
    const abort = new AbortController();
    const before = relay.messagesUp;
    const request = client.completions
      .create({ ...greedy, prompt: PROMPT, stream: true }, { signal: abort.signal })
      .catch(() => undefined);
    await waitFor(() => relay.messagesUp > before, { what: 'the hello to go up' });
    abort.abort();
    await request;
    // Before, the slot stayed taken until the welcome, then the prompt's results, had come (20 s each); 10 s leaves
    // room for a loaded machine and still tells the two apart.
    await waitFor(async () => (await getJson<{ running: number }>(`${device.origin}/health`)).running === 0, {
      what: 'the device to give up the request',
      timeoutMs: 10_000,
    });
  } finally {
    relay.delayMs = 0;
  }
  const after = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 3 });
  assert.equal(after.usage?.completion_tokens, 3);
});

test("errors come back in OpenAI's format with the right status", { skip }, async () => {
  const post = async (path: string, body: string) => {
    const response = await fetch(`${device.baseURL}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } };
    return { status: response.status, body: (await response.json()) as ErrorBody };
  };
  const malformed = await post('/chat/completions', '{"model": "default-split", "messages": [');
  assert.equal(malformed.status, 400);
  assert.equal(malformed.body.error.type, 'invalid_request_error');
  assert.equal(malformed.body.error.code, 'invalid_json');
  assert.deepEqual(Object.keys(malformed.body.error).sort(), ['code', 'message', 'param', 'type']);

  const expectError = async (request: Promise<unknown>, status: number, param: string | null, code: string | null) => {
    await assert.rejects(request, (error: unknown) => {
      assert.ok(error instanceof OpenAI.APIError, String(error));
      assert.equal(error.status, status, error.message);
      assert.equal(error.param, param, error.message);
      assert.equal(error.code, code, error.message);
      return true;
    });
  };
  const chat = (body: Record<string, unknown>) =>
    client.chat.completions.create({ model: MODEL, messages: user, ...body } as never);
  await expectError(chat({ max_tokens: 'five' }), 400, 'max_tokens', 'invalid_type');
  await expectError(chat({ temperature: 7 }), 400, 'temperature', 'invalid_value');
  await expectError(chat({ stop: 3 }), 400, 'stop', 'invalid_type');
  await expectError(chat({ messages: [{ role: 'user', content: 5 }] }), 400, 'messages[0].content', 'invalid_type');
  await expectError(chat({ model: 'gpt-4o' }), 404, 'model', 'model_not_found');
  await expectError(chat({ messages: [] }), 400, 'messages', 'empty_array');
  await expectError(chat({ n: 2 }), 400, 'n', 'unsupported_parameter');
  await expectError(chat({ max_tokens: 5000 }), 400, 'max_tokens', 'context_length_exceeded');
  const long = client.completions.create({ model: MODEL, prompt: 'and '.repeat(1200), max_tokens: 4 });
  await expectError(long, 400, 'prompt', 'context_length_exceeded');
  // The device's BAD_OPTION keeps its code, as every other HatError code does (it was null).
  await expectError(client.completions.create({ model: MODEL, prompt: [5, 99999] }), 400, 'prompt', 'bad_option');
  const missing = await post('/completions', JSON.stringify({ prompt: 'x' }));
  assert.equal(missing.status, 400);
  assert.equal(missing.body.error.code, 'missing_required_parameter');
  const unknown = await fetch(`${device.baseURL}/embeddings`, { method: 'POST', body: '{}' });
  assert.equal(unknown.status, 404);
  assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, 'unknown_url');
  // Nothing above hurt the server.
  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    [MODEL],
  );
});

test(
  "a cloud with a smaller context than the model's: 400 context_length_exceeded before any token",
  { skip },
  async () => {
    const small = await spawnCloud(split, ['--max-context', '64']);
    try {
      const smallDevice = await spawnDeviceServer(split, small.url);
      try {
        const smallClient = new OpenAI({ baseURL: smallDevice.baseURL, apiKey: 'not-needed', maxRetries: 0 });
        // Fits the model's context (1,024), not the cloud's 64: refused whole, not cut off part-way.
        const request = smallClient.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 80 });
        await assert.rejects(request, (error: unknown) => {
          assert.ok(error instanceof OpenAI.APIError, String(error));
          assert.equal(error.status, 400, error.message);
          assert.equal(error.code, 'context_length_exceeded', error.message);
          assert.match(error.message, /the cloud serves at most 64 positions per session/);
          return true;
        });
        // Within it, the same device answers.
        const ok = await smallClient.completions.create({
          model: MODEL,
          prompt: PROMPT,
          temperature: 0,
          max_tokens: 8,
        });
        assert.equal(ok.usage?.completion_tokens, 8);
        // Without max_tokens the budget is the room the cloud leaves, not the model's (which was refused before).
        const open = await smallClient.completions.create({ model: MODEL, prompt: PROMPT, temperature: 0 });
        const room = 64 - open.usage!.prompt_tokens;
        const reason = open.choices[0].finish_reason;
        assert.ok(open.usage!.completion_tokens <= room, `${open.usage!.completion_tokens} tokens of ${room}`);
        assert.ok(open.usage!.completion_tokens === room || reason === 'stop', `${reason}`);
      } finally {
        await smallDevice.stop();
      }
    } finally {
      await small.stop();
    }
  },
);

test('no chat template: chat is 400, completions work; a cloud lost mid-stream, then 503', { skip }, async () => {
  const bundle = mkdtempSync(join(tmpdir(), 'hat-no-template-'));
  try {
    for (const name of readdirSync(split)) {
      if (!name.startsWith('middle') && name !== 'tokenizer_config.json') cpSync(join(split, name), join(bundle, name));
    }
    const ownRelay = await recordingRelay(cloud.url);
    try {
      const args = ['--wire', 'fp32', '--model-name', 'kjv', '--reconnect', '0'];
      const plain = await spawnDeviceServer(bundle, ownRelay.url, args);
      try {
        await withoutTemplate(plain, ownRelay);
      } finally {
        await plain.stop();
      }
    } finally {
      await ownRelay.close();
    }
  } finally {
    rmSync(bundle, { recursive: true, force: true });
  }
});

async function withoutTemplate(plain: DeviceServer, ownRelay: Relay): Promise<void> {
  const other = new OpenAI({ baseURL: plain.baseURL, apiKey: 'x', maxRetries: 0 });
  await assert.rejects(other.chat.completions.create({ model: 'kjv', messages: user }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal(error.code, 'chat_template_missing');
    assert.match(error.message, /no chat template/);
    return true;
  });
  const answer = await other.completions.create({ model: 'kjv', prompt: PROMPT, temperature: 0, max_tokens: MAX });
  assert.equal(answer.choices[0].text, references.completion!.text);

  // The cloud lost mid-stream: the text so far arrives, then an error event the SDK raises.
  ownRelay.delayMs = 150;
  const stream = await other.completions.create({ ...greedy, model: 'kjv', prompt: PROMPT, stream: true });
  let streamed = '';
  await assert.rejects(
    (async () => {
      for await (const chunk of stream) {
        streamed += chunk.choices[0]?.text ?? '';
        if (streamed) await ownRelay.close(); // from now on the cloud is unreachable for this device
      }
    })(),
    (error: unknown) => {
      assert.ok(error instanceof OpenAI.APIError, String(error));
      assert.match(error.message, /cloud/);
      return true;
    },
  );
  assert.ok(streamed.length > 0 && references.completion!.text.startsWith(streamed), streamed);
  const lost = other.completions.create({ model: 'kjv', prompt: PROMPT, max_tokens: 4 });
  await assert.rejects(lost, (error: unknown) => {
    assert.ok(error instanceof OpenAI.InternalServerError, String(error));
    assert.equal(error.status, 503);
    assert.equal(error.code, 'cloud_unreachable');
    assert.match(error.message, /cannot reach the cloud|cloud connection closed/);
    assert.equal(error.message.split('\n').length, 1);
    return true;
  });
  const health = await fetch(`${plain.origin}/health`);
  assert.equal(health.status, 200);
}

test("privacy: nothing the device sent holds the prompts' text or their token ids", { skip }, async () => {
  const uplink = Buffer.concat(relay.uplink);
  assert.ok(uplink.length > 10_000, `recorded ${uplink.length} bytes`);
  const generated = references.completion!.text.slice(0, 17);
  assert.equal(generated, ' unto him, Behold');
  for (const text of [CHAT, PROMPT, 'beginning', 'heaven', 'God said', generated]) {
    for (const encoding of ['utf8', 'utf16le'] as const) {
      assert.equal(uplink.indexOf(Buffer.from(text, encoding)), -1, `"${text}" found as ${encoding}`);
    }
  }
  for (const ids of [references.chat!.promptIds, references.completion!.promptIds, references.completion!.ids]) {
    for (let i = 0; i + 3 <= ids.length; i++) {
      for (const width of [4, 8] as const) {
        const bytes = Buffer.alloc(3 * width);
        ids.slice(i, i + 3).forEach((id, j) => {
          if (width === 4) bytes.writeInt32LE(id, j * 4);
          else bytes.writeBigInt64LE(BigInt(id), j * 8);
        });
        assert.equal(uplink.indexOf(bytes), -1, `ids ${ids.slice(i, i + 3)} found as int${width * 8}`);
      }
    }
  }
});
