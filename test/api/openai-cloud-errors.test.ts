/**
 * What the official `openai` client meets when the cloud refuses a device (a real HatDevice on the shipped
 * default split, the real API server): a full, draining or idle-dropping cloud is 503 with Retry-After, which
 * the SDK retries; a device the cloud refuses by configuration (token, split) is 502 with x-should-retry: false,
 * which the SDK does not retry; the cloud's CONTEXT_LIMIT is the client's 400 context_length_exceeded. The cloud
 * here answers every hello with one error frame, as serve-cloud refuses a session. And 64-bit seeds (OpenAI takes
 * them) reach a real serve-cloud, reduced modulo 2^32.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import OpenAI from 'openai';
import { WebSocketServer } from 'ws';
import { HatDevice } from '../../src/api/hat-device.ts';
import { serveOpenAI, type OpenAIServer } from '../../src/api/openai/server.ts';
import { serveDevice } from '../../src/api/serve-device.ts';
import { silentReporter } from '../../src/reporter.ts';
import type { HatError } from '../../src/errors.ts';
import { spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { encodeFrame, encodeJson } from '../../src/runtime/protocol/frame.ts';
import type { WireErrorCode } from '../../src/runtime/protocol/control.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const split = join(repoRoot, 'fixtures', 'default-split');
const skip = existsSync(join(split, 'manifest.json')) ? false : 'SKIPPED: fixtures/default-split is missing';
const MODEL = 'default-split';

/** A cloud that refuses every session with `code`, as serve-cloud does (an error frame, then close 1008). */
let refusal: WireErrorCode = 'SESSION_LIMIT';
let refusing: WebSocketServer;
let refused: OpenAIServer;
let refusedDevice: HatDevice;
let cloud: SpawnedCloud;
let served: OpenAIServer;
let servedDevice: HatDevice;

before(async () => {
  if (skip) return;
  refusing = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => refusing.once('listening', () => resolve()));
  refusing.on('connection', (socket) =>
    socket.once('message', () =>
      socket.send(
        encodeFrame({ type: 'error' }, encodeJson({ code: refusal, message: `refused (${refusal})` })),
        { binary: true },
        () => socket.close(1008, refusal),
      ),
    ),
  );
  const { port } = refusing.address() as AddressInfo;
  refusedDevice = await HatDevice.open(split, { cloud: `ws://127.0.0.1:${port}`, modelId: MODEL, threads: 1 });
  refused = await serveOpenAI(refusedDevice, { port: 0 });
  cloud = await spawnCloud(split);
  // Not speculative: how many tokens a round drafts follows measured latencies, and with it how the sampler's
  // random numbers are spent, so the same seed can sample differently from run to run.
  servedDevice = await HatDevice.open(split, {
    cloud: cloud.url,
    wire: 'fp32',
    modelId: MODEL,
    threads: 1,
    speculative: false,
  });
  served = await serveOpenAI(servedDevice, { port: 0 });
});

after(async () => {
  await refused?.close();
  await served?.close();
  await refusedDevice?.close();
  await servedDevice?.close();
  await cloud?.stop();
  await new Promise((resolve) => (refusing ? refusing.close(resolve) : resolve(undefined)));
});

/** An openai client (the SDK's default two retries unless told) that counts the HTTP requests it makes. */
function countingClient(baseURL: string, maxRetries?: number) {
  const counter = { requests: 0 };
  const client = new OpenAI({
    baseURL,
    apiKey: 'not-needed',
    ...(maxRetries === undefined ? {} : { maxRetries }),
    fetch: (url, init) => {
      counter.requests++;
      return fetch(url, init);
    },
  });
  return { client, counter };
}

async function refusedWith(code: WireErrorCode, maxRetries?: number) {
  refusal = code;
  const { client, counter } = countingClient(refused.url, maxRetries);
  const started = performance.now();
  const error = await client.chat.completions
    .create({ model: MODEL, messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 })
    .then(
      () => assert.fail(`${code}: the request succeeded`),
      (e: unknown) => e,
    );
  assert.ok(error instanceof OpenAI.APIError, `${code}: ${String(error)}`);
  return { error, requests: counter.requests, ms: performance.now() - started };
}

test(
  'a full, draining or idle-dropping cloud is 503 with Retry-After; the SDK retries it after that wait',
  { skip },
  async () => {
    for (const code of ['SESSION_LIMIT', 'GOING_AWAY', 'IDLE_TIMEOUT'] as const) {
      const { error, requests, ms } = await refusedWith(code, 1);
      assert.equal(error.status, 503, `${code}: ${error.message}`);
      assert.equal(error.type, 'service_unavailable_error', code);
      assert.equal(error.code, code.toLowerCase());
      assert.equal(error.headers?.get('retry-after'), '1', code);
      assert.match(error.message, new RegExp(`error\\[${code}\\]: the cloud closed the session`));
      assert.equal(requests, 2, `${code}: retried once`);
      assert.ok(ms >= 900, `${code}: the retry waited Retry-After (${ms.toFixed(0)} ms)`);
    }
  },
);

test('a cloud that refuses the device by configuration is 502, which the SDK does not retry', { skip }, async () => {
  for (const code of ['UNAUTHORIZED', 'MANIFEST_MISMATCH', 'RATE_LIMITED'] as const) {
    const { error, requests } = await refusedWith(code);
    assert.equal(error.status, 502, `${code}: ${error.message}`);
    assert.equal(error.code, code.toLowerCase());
    assert.equal(error.headers?.get('x-should-retry'), 'false', code);
    assert.equal(requests, 1, `${code}: not retried (the SDK retries a 5xx twice by default)`);
  }
  // Other failures no retry can mend are 500, not retried either.
  const { error, requests } = await refusedWith('RUN_FAILED');
  assert.deepEqual([error.status, error.code, requests], [500, 'run_failed', 1]);
});

test(
  'run-device --serve starts beside a cloud that is full now (a warning) but not one that refuses it',
  { skip },
  async () => {
    const { port } = refusing.address() as AddressInfo;
    const start = (warnings: string[]) =>
      serveDevice(
        split,
        { cloud: `ws://127.0.0.1:${port}`, modelId: MODEL, threads: 1 },
        { host: '127.0.0.1', port: 0 },
        { ...silentReporter, warn: (message) => warnings.push(message) },
      );
    try {
      for (const code of ['SESSION_LIMIT', 'GOING_AWAY'] as const) {
        refusal = code;
        const warnings: string[] = [];
        const { device, server } = await start(warnings);
        await server.close();
        await device.close();
        assert.match(warnings.join('\n'), new RegExp(`${code}.*503`), code);
      }
      refusal = 'MANIFEST_MISMATCH';
      await assert.rejects(start([]), (error: HatError) => error.code === 'MANIFEST_MISMATCH');
    } finally {
      refusal = 'SESSION_LIMIT';
    }
  },
);

test("the cloud's CONTEXT_LIMIT is the client's 400 context_length_exceeded", { skip }, async () => {
  const { error, requests } = await refusedWith('CONTEXT_LIMIT');
  assert.ok(error instanceof OpenAI.BadRequestError, error.message);
  assert.equal(error.code, 'context_length_exceeded');
  assert.equal(error.param, 'messages');
  assert.equal(requests, 1);
});

test('64-bit seeds are accepted and reduced modulo 2^32: the same seed, the same sample', { skip }, async () => {
  const { client } = countingClient(served.url, 0);
  const sample = async (seed: number) =>
    (await client.completions.create({ model: MODEL, prompt: 'And God said', max_tokens: 8, temperature: 1.5, seed }))
      .choices[0].text;
  // 2^63 - 1 is the double 2^63 here: ≡ 0 (mod 2^32); 2^53 + 2^32 · 5 + 8 (a double exactly) ≡ 8.
  const [big, zero, past, eight] = await Promise.all([
    sample(2 ** 63 - 1),
    sample(0),
    sample(2 ** 53 + 2 ** 32 * 5 + 8),
    sample(8),
  ]);
  assert.equal(big, zero);
  assert.equal(past, eight);
  assert.notEqual(zero, eight, 'different seeds sample differently (else the test shows nothing)');
  // Negative seeds too, as two's complement: -2^60 ≡ 0, -2^52 + 8 (a double exactly) ≡ 8.
  assert.equal(await sample(-(2 ** 60)), zero);
  assert.equal(await sample(-(2 ** 52) + 8), eight);
});
