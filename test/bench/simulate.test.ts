import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventLoop } from '../../src/bench/event-loop.ts';
import {
  paperTestbed,
  simulateScenario,
  type PlannerCall,
  type SimulatedBatch,
  type SimulationConfig,
} from '../../src/bench/simulate.ts';
import { ChunkPlanner } from '../../src/runtime/chunk-planner.ts';
import { CHUNK_AGING_MS, DEFAULT_SMALL_ROWS, MIN_PAST_FILL } from '../../src/runtime/cloud/scheduler.ts';
import type { StageCosts } from '../../src/bench/calibrate.ts';
import { fitLine } from '../../src/bench/calibrate.ts';

test('the event loop wakes processes in time order and advances the clock', async () => {
  const loop = new EventLoop();
  const seen: string[] = [];
  const proc = async (name: string, ms: number[]) => {
    for (const d of ms) {
      await loop.sleep(d);
      seen.push(`${name}@${loop.now}`);
    }
  };
  const all = Promise.all([proc('a', [5, 5]), proc('b', [3, 10])]);
  await loop.run();
  await all;
  assert.deepEqual(seen, ['b@3', 'a@5', 'a@10', 'b@13']);
});

test('least squares recovers a line', () => {
  const { a, b } = fitLine([1, 2, 4, 8].map((x) => ({ x, y: 3 + 0.5 * x })));
  assert.ok(Math.abs(a - 3) < 1e-9 && Math.abs(b - 0.5) < 1e-9);
});

const uploadBound: StageCosts = {
  deviceInputMsPerToken: 0.05,
  deviceDecodeStepMs: 1,
  draftStepMs: 1,
  cloud: { baseMs: 2, perTokenMs: 0.3, samples: [] },
  bytesPerToken: 8192,
  frameHeaderBytes: 52,
};

const small = (over: Partial<SimulationConfig> = {}): SimulationConfig => ({
  ...paperTestbed(uploadBound, { tokensPerRound: 2, rowsPerRound: 3, parallelHitRate: 0.5 }, 1),
  requests: 40,
  maxNewTokens: 16,
  ...over,
});

test(
  'SIMULATION on an upload-bound 7B-like cost profile: chunking cuts TTFT, ' + 'speculation cuts TBT, deterministic',
  async () => {
    const config = small();
    const shape = await simulateScenario('u-shape', 4, config);
    const hat = await simulateScenario('hat', 4, config);
    const spec = await simulateScenario('u-spec', 4, config);
    // Uploading the whole prompt (~1.1 ms a token here) cannot be hidden; chunks hide the device's input part and
    // all but the last chunk's cloud compute, so roughly 0.8× u-shape is the floor on this profile.
    assert.ok(hat.ttftMs.mean < 0.85 * shape.ttftMs.mean, `hat ${hat.ttftMs.mean} vs u-shape ${shape.ttftMs.mean}`);
    assert.ok(spec.tbtMs.mean < shape.tbtMs.mean, `u-spec ${spec.tbtMs.mean} vs u-shape ${shape.tbtMs.mean}`);
    assert.deepEqual(await simulateScenario('hat', 4, config), hat);
  },
);

test('SIMULATION: hat and chunk-only chunks are what a ChunkPlanner gives for the same observations', async () => {
  const config = small();
  for (const scenario of ['hat', 'chunk-only'] as const) {
    const calls = new Map<number, PlannerCall[]>();
    const chunks: number[] = [];
    await simulateScenario(scenario, 4, config, {
      planner: (device, call) => calls.set(device, [...(calls.get(device) ?? []), call]),
      chunk: (_device, size) => chunks.push(size),
    });
    const sized: number[] = [];
    let replayed = 0;
    for (const [, deviceCalls] of calls) {
      // A fresh planner built as a device builds it (prefill.ts), fed the same calls in the same order.
      const planner = new ChunkPlanner({ bytesPerToken: uploadBound.bytesPerToken, maxChunk: 4096 });
      for (const call of deviceCalls) {
        if (call.call === 'seed') planner.seed(call.latency);
        else if (call.call === 'observeDevice') planner.observeDevice(call.tokens, call.ms);
        else if (call.call === 'observeResult') {
          const r = call.result;
          assert.equal((r.bytesUp - uploadBound.frameHeaderBytes) % uploadBound.bytesPerToken, 0);
          assert.ok(r.resultAt >= r.sentAt + r.queueMs + r.computeMs, 'a result arrives after its queue and compute');
          planner.observeResult(r);
        } else {
          assert.equal(planner.next(call.remaining), call.size, `${scenario}: next(${call.remaining})`);
          sized.push(call.size);
          replayed++;
        }
      }
      assert.deepEqual(deviceCalls[0], { call: 'seed', latency: { baseMs: 2, perTokenMs: 0.3 } });
    }
    assert.ok(replayed > 0);
    // Every chunk sent was sized by the planner, and the planner got past its 64-token probes.
    assert.equal(chunks.length, replayed);
    assert.ok(
      sized.some((size) => size !== 64),
      `${scenario}: planner sizes ${[...new Set(sized)].join(',')}`,
    );
  }
});

test('SIMULATION: u-sarathi sends fixed chunks, u-shape and u-spec the whole prompt', async () => {
  const config = small();
  for (const scenario of ['u-sarathi', 'u-shape', 'u-spec'] as const) {
    const chunks: Array<{ size: number; remaining: number }> = [];
    await simulateScenario(scenario, 4, config, { chunk: (_d, size, remaining) => chunks.push({ size, remaining }) });
    for (const { size, remaining } of chunks) {
      assert.equal(size, scenario === 'u-sarathi' ? Math.min(config.sarathiChunk, remaining) : remaining);
    }
  }
});

test("SIMULATION: the cloud batches with serve-cloud's scheduler: verifications never padded with chunks", async () => {
  const config = small({ maxBatch: 4, maxBatchTokens: 24 });
  const batches: SimulatedBatch[] = [];
  await simulateScenario('hat', 6, config, { batch: (b) => batches.push(b) });
  let batched = 0;
  for (const b of batches) {
    const origins = new Set(b.requests.map((r) => r.origin));
    assert.equal(origins.size, 1, `a run mixed ${[...origins].join(' and ')}`);
    assert.equal(b.kind === 'small', origins.has('verification'));
    for (const r of b.requests) assert.equal(r.rows <= DEFAULT_SMALL_ROWS, b.kind === 'small');
    const devices = b.requests.map((r) => r.device);
    assert.equal(new Set(devices).size, devices.length, 'one request per session per run');
    assert.ok(b.requests.length <= config.maxBatch);
    const longest = Math.max(...b.requests.map((r) => r.rows));
    assert.equal(b.paddedRows, b.requests.length * longest);
    if (b.requests.length > 1) {
      batched++;
      assert.ok(b.paddedRows <= config.maxBatchTokens);
      const pasts = b.requests.map((r) => r.past);
      const filled = pasts.reduce((sum, past) => sum + past, 0);
      assert.ok(filled >= MIN_PAST_FILL * pasts.length * Math.max(...pasts), `pasts ${pasts.join(',')}`);
    }
    assert.equal(b.computeMs, uploadBound.cloud.baseMs + uploadBound.cloud.perTokenMs * b.paddedRows);
  }
  assert.ok(batched > 0, 'some runs batch several devices');
  assert.ok(batches.some((b) => b.kind === 'chunk'));
});

test('SIMULATION: chunks age as in serve-cloud: no fresh chunk runs first while one has waited', async () => {
  // Overloaded, so queues grow and chunks wait past CHUNK_AGING_MS.
  const config = small({ maxBatch: 4, maxBatchTokens: 24 });
  const batches: SimulatedBatch[] = [];
  await simulateScenario('hat', 40, config, { batch: (b) => batches.push(b) });
  const chunkRuns = batches.filter((b) => b.kind === 'chunk');
  const queuedAt = chunkRuns.flatMap((b) =>
    b.requests.map((r) => ({ at: b.startedAt, queued: b.startedAt - r.waitedMs })),
  );
  const longest = Math.max(...chunkRuns.flatMap((b) => b.requests.map((r) => r.waitedMs)));
  assert.ok(longest > CHUNK_AGING_MS, `overloaded: the longest chunk wait was ${longest} ms`);
  for (const b of chunkRuns) {
    if (b.requests[0].waitedMs >= CHUNK_AGING_MS) continue;
    // The batch formed around a fresh chunk: no chunk that ran later had waited CHUNK_AGING_MS by then.
    const aged = queuedAt.find((c) => c.at > b.startedAt && c.queued <= b.startedAt - CHUNK_AGING_MS);
    assert.equal(
      aged,
      undefined,
      `at ${b.startedAt.toFixed(0)} ms a fresh chunk ran before one queued since ${aged?.queued}`,
    );
  }
});

test('SIMULATION: the same seed gives the same results, chunks and batches; another seed does not', async () => {
  const trace = async (config: SimulationConfig) => {
    const events: unknown[] = [];
    const result = await simulateScenario('hat', 6, config, {
      chunk: (device, size) => events.push(['chunk', device, size]),
      batch: (b) => events.push(['batch', b]),
    });
    return { result, events };
  };
  const first = await trace(small());
  assert.deepEqual(await trace(small()), first);
  assert.notDeepEqual((await trace(small({ seed: 2 }))).result, first.result);
});
