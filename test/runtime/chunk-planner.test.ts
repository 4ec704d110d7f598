import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkPlanner } from '../../src/runtime/chunk-planner.ts';

test('the planner solves X·A/β = W + g(X)/P from its measurements', () => {
  const planner = new ChunkPlanner({ bytesPerToken: 1000, maxChunk: 4096, minChunk: 1 });
  assert.equal(planner.next(10_000), 64, 'first chunk is the probe');
  // Uplink 100 bytes/ms (0.1 MB/s... per ms), i.e. 10 ms per token; cloud g(X) = 20 + 2X ms, wait 10 ms.
  for (let i = 0; i < 30; i++) {
    planner.observe({ tokens: 64, bytesUp: 64_000, roundTripMs: 640 + 5 + 148, queueMs: 5, computeMs: 148, latency: { baseMs: 20, perTokenMs: 2 } });
  }
  // X = (W + g0) / (A/β − g1) = (5 + 20) / (10 − 2) ≈ 3.1
  assert.ok(Math.abs(planner.idealChunk() - 25 / 8) < 0.2, String(planner.idealChunk()));
});

test('when the link outruns the cloud the chunk is as large as allowed, and no runt chunk is left', () => {
  const planner = new ChunkPlanner({ bytesPerToken: 10, maxChunk: 512, minChunk: 16 });
  planner.observe({ tokens: 64, bytesUp: 640, roundTripMs: 200, queueMs: 0, computeMs: 199, latency: { baseMs: 1, perTokenMs: 3 } });
  assert.equal(planner.idealChunk(), Infinity);
  assert.equal(planner.next(2000), 512);
  assert.equal(planner.next(520), 520, 'a remainder of 8 < minChunk joins this chunk');
});
