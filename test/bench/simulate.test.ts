import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventLoop } from '../../src/bench/event-loop.ts';
import { hatChunk, paperTestbed, simulateScenario } from '../../src/bench/simulate.ts';
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

test('HAT chunk rule: X = (W + g0) / (A/β − g1), bounded; the whole prompt when upload is never the bottleneck', () => {
  // A/β = 1000 B / 100 B/ms = 10 ms per token, g1 = 2 → 8 ms per token; (W + g0) = 20 + 12 = 32 → 4 → floor at 16.
  assert.equal(hatChunk(1000, 1000, 100, 20, { baseMs: 12, perTokenMs: 2 }), 16);
  assert.equal(hatChunk(1000, 1000, 100, 780, { baseMs: 20, perTokenMs: 2 }), 100);
  assert.equal(hatChunk(110, 1000, 100, 780, { baseMs: 20, perTokenMs: 2 }), 110); // a runt below 16 joins
  assert.equal(hatChunk(500, 10, 1000, 0, { baseMs: 1, perTokenMs: 1 }), 500);
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

test(
  'SIMULATION on an upload-bound 7B-like cost profile: chunking cuts TTFT, ' + 'speculation cuts TBT, deterministic',
  async () => {
    const config = {
      ...paperTestbed(uploadBound, { tokensPerRound: 2, rowsPerRound: 3, parallelHitRate: 0.5 }, 1),
      requests: 40,
      maxNewTokens: 16,
    };
    const shape = await simulateScenario('u-shape', 4, config);
    const hat = await simulateScenario('hat', 4, config);
    const spec = await simulateScenario('u-spec', 4, config);
    assert.ok(hat.ttftMs.mean < 0.8 * shape.ttftMs.mean, `hat ${hat.ttftMs.mean} vs u-shape ${shape.ttftMs.mean}`);
    assert.ok(spec.tbtMs.mean < shape.tbtMs.mean, `u-spec ${spec.tbtMs.mean} vs u-shape ${shape.tbtMs.mean}`);
    assert.deepEqual(await simulateScenario('hat', 4, config), hat);
  },
);
