import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { decodeFrame, encodeFrame, encodeJson } from '../../../src/runtime/protocol/frame.ts';
import { encodeHidden } from '../../../src/runtime/protocol/hidden-codec.ts';
import { readManifest } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { connectDeviceGenerator, GREEDY } from '../../../src/runtime/device/device-generator.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { HatError } from '../../../src/errors.ts';
import { runDevice } from '../../../src/runtime/device/run-device.ts';
import { OnnxCausalLm, type CausalLm } from '../../../src/runtime/full-model.ts';
import { SlmCausalLm } from '../../../src/runtime/device/slm.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import { addIdentityAdapter, deviceOptions, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';

const prompt = [1, 5, 9, 22, 13, 40];
const NEW = 20;
const STOP_AFTER = 5;

/** Greedy ids from a CausalLm: the references both runs are held to. */
async function greedy(model: CausalLm, context: number[], n: number): Promise<number[]> {
  const { ids } = await generateTokens(model, context, { maxNewTokens: n, sampler: argmax });
  return ids;
}

async function generateWhileCloudDies(fallbackLocal: boolean) {
  const { model, split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const { server, port } = await serveSplit(split);
  const manifest = readManifest(split);
  const parts = await openDeviceParts(split, manifest, { withAdapter: true });
  const { generator } = await connectDeviceGenerator({
    parts,
    cloud: { url: `ws://127.0.0.1:${port}`, wire: 'fp32' },
    sampling: GREEDY,
    draftThreshold: new FixedThresholdPolicy(0.99, 1),
    maxDraft: 1,
    fallbackLocal,
  });
  let stopping: Promise<void> | undefined;
  // How many tokens were committed when the server began to stop (the round that crossed STOP_AFTER).
  let stoppedAt = 0;
  const streamed: number[] = [];
  const generating = generator.generate(prompt, {
    maxNewTokens: NEW,
    speculative: true,
    parallelDrafting: false,
    chunk: 'off',
    onTokens: (ids) => {
      streamed.push(...ids);
      if (streamed.length >= STOP_AFTER && !stopping) {
        stoppedAt = streamed.length;
        stopping = server.stop();
      }
    },
  });
  // The server stops whatever happens: a generation that fails early must not leave it holding the test open.
  const result = await generating.finally(() => stopping ?? server.stop());
  return { result, streamed, stoppedAt, model, split };
}

test('when the cloud drops mid-generation the device stops with a clear error and keeps the text so far', async () => {
  const { result, streamed, stoppedAt, model } = await generateWhileCloudDies(false);
  assert.ok(result.error instanceof HatError, String(result.error));
  assert.equal(result.error.code, 'GOING_AWAY');
  assert.equal(result.error.message, 'the cloud closed the session: GOING_AWAY: the server is shutting down');
  // Nothing is committed after the round during which the server stopped, and what was kept is the full model's.
  assert.ok(stoppedAt >= STOP_AFTER && stoppedAt < NEW, `stopped after ${stoppedAt}`);
  assert.equal(result.ids.length, stoppedAt);
  assert.deepEqual(result.ids, await greedy(await OnnxCausalLm.open(model), prompt, stoppedAt));
  assert.deepEqual(result.ids, streamed);
});

test('with local fallback the device finishes with its small model and says so', async () => {
  const { result, stoppedAt, model, split } = await generateWhileCloudDies(true);
  assert.equal(result.error, undefined);
  assert.equal(result.ids.length, NEW);
  // The cloud's tokens are the full model's; the rest are the small model's greedy continuation of them.
  const kept = result.ids.slice(0, stoppedAt);
  assert.deepEqual(kept, await greedy(await OnnxCausalLm.open(model), prompt, stoppedAt));
  assert.deepEqual(
    result.ids.slice(stoppedAt),
    await greedy(await SlmCausalLm.open(split), [...prompt, ...kept], NEW - stoppedAt),
  );
  assert.equal(
    result.metrics.fallback,
    `the cloud failed after ${stoppedAt} tokens (the cloud closed the session: GOING_AWAY: ` +
      'the server is shutting down); continued with the small model alone',
  );
});

test('local fallback, the cloud lost while prompt chunks are in flight: the small model takes them all', async () => {
  const { split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const cloud = await serveSplit(split, { maxSessions: 4 });
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
  const slow = { bandwidth: Infinity, latencyMs: 100, jitterMs: 0 };
  let forwards = 0;
  let stopping: Promise<void> | undefined;
  const { generator, close } = await connectDeviceGenerator({
    parts,
    cloud: {
      url: `ws://127.0.0.1:${cloud.port}`,
      wire: 'fp32',
      // 100 ms each way: all four chunks are sent before the first is answered; the cloud stops as the last goes up.
      link: { name: 'slow', up: slow, down: slow },
      recordUplink: (bytes) => {
        if (bytes[6] === 3 && ++forwards === 4) stopping ??= cloud.server.stop();
      },
    },
    sampling: GREEDY,
    draftThreshold: new FixedThresholdPolicy(0, 3),
    maxDraft: 3,
    fallbackLocal: true,
  });
  const long = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17, 4, 44, 12, 6];
  try {
    const result = await generator.generate(long, {
      maxNewTokens: 8,
      speculative: true,
      parallelDrafting: false,
      chunk: 4,
    });
    // The four unanswered chunks were sent again to the local verifier back to back; each ran after the one before.
    assert.equal(result.error, undefined, String(result.error));
    assert.deepEqual(result.ids, await greedy(await SlmCausalLm.open(split), long, 8));
    assert.match(result.metrics.fallback ?? '', /continued with the small model alone/);
  } finally {
    close();
    await (stopping ?? cloud.server.stop());
  }
});

test('a result that cannot answer the request waiting for it fails the session with PROTOCOL', async () => {
  // A cloud (or something between) that welcomes the device, then answers every forward with one row.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  wss.on('connection', (socket) => {
    socket.on('message', (data: Buffer) => {
      const { header } = decodeFrame(new Uint8Array(data), { maxPayloadBytes: 1 << 20 });
      const welcome = {
        sessionId: 1,
        hiddenSize: 4,
        maxTokensPerFrame: 16,
        latencyModel: { baseMs: 1, perTokenMs: 0 },
      };
      const reply =
        header.type === 'hello'
          ? encodeFrame({ type: 'welcome', sessionId: 1, seq: 0 }, encodeJson(welcome))
          : encodeFrame(
              { type: 'result', dtype: 'fp32', sessionId: 1, seq: header.seq, nTokens: 1, hiddenSize: 4 },
              encodeHidden(new Float32Array(4), 1, 4, 'fp32'),
            );
      socket.send(reply, { binary: true });
    });
  });
  const { port } = wss.address() as AddressInfo;
  const client = await CloudClient.connect({
    url: `ws://127.0.0.1:${port}`,
    manifestHash: 'x',
    hiddenSize: 4,
    wire: 'fp32',
  });
  try {
    // A prefill chunk is answered with its last row: right. A 3-row verification answered with 1 row: not.
    assert.equal((await client.forward(new Float32Array(8), 2, 0, { allPositions: false })).rows, 1);
    await assert.rejects(
      client.forward(new Float32Array(12), 3, 2, { allPositions: true }),
      (error: HatError) =>
        error.code === 'PROTOCOL' && /a result of 1 × 4 answers a request of 3 × 4/.test(error.message),
    );
    assert.equal(client.closed, true);
  } finally {
    client.close();
    wss.close();
  }
});

test('an unreachable cloud is a one-line NETWORK error', async () => {
  await assert.rejects(
    CloudClient.connect({
      url: 'ws://127.0.0.1:9',
      manifestHash: 'x',
      hiddenSize: 4,
      wire: 'fp32',
      connectTimeoutMs: 2000,
    }),
    (e: HatError) => e.code === 'NETWORK' && /cannot reach the cloud/.test(e.message),
  );
});

test('a prefill chunk refused while later chunks are in flight ends the generation with its code', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  const { split } = await makeSmallSplit();
  const { server, port } = await serveSplit(split, { maxContext: 40 });
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: false });
  const { generator, close } = await connectDeviceGenerator({
    parts,
    cloud: { url: `ws://127.0.0.1:${port}`, wire: 'fp32' },
    sampling: GREEDY,
    draftThreshold: new FixedThresholdPolicy(0.99, 1),
    maxDraft: 1,
  });
  try {
    const long = Array.from({ length: 96 }, (_, i) => 2 + (i % 50));
    const outcome = await generator
      .generate(long, { maxNewTokens: 4, speculative: false, parallelDrafting: false, chunk: 8 })
      .then(
        (result) => result.error,
        (error: unknown) => error,
      );
    assert.ok(outcome instanceof HatError, String(outcome));
    assert.equal(outcome.code, 'CONTEXT_LIMIT');
    await new Promise((resolve) => setImmediate(resolve)); // let any unhandled rejection surface
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    close();
    await server.stop();
  }
});

test("run-device refuses prompt + --max-new-tokens over the cloud's context before generating anything", async () => {
  const { split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const { server, port } = await serveSplit(split, { maxContext: 40 });
  const written: string[] = [];
  const run = (length: number) =>
    runDevice(
      deviceOptions(split, port, {
        prompt: { ids: Array.from({ length }, (_, i) => 2 + (i % 50)) },
        chunk: 8,
        wire: 'fp32',
        onText: (text) => written.push(text),
      }),
    );
  try {
    await assert.rejects(
      run(25),
      (e: HatError) =>
        e.code === 'CONTEXT_LIMIT' &&
        /at most 40 positions per session: the prompt \(25 tokens\) \+ 16 to generate = 41$/.test(e.message) &&
        /at most 15/.test(e.hint ?? ''),
    );
    assert.deepEqual(written, []);
    // Exactly at the limit it runs to the end, drafts included.
    const fits = await run(24);
    assert.equal(fits.error, undefined);
    assert.equal(fits.ids.length, 16);
  } finally {
    await server.stop();
  }
});
