import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MetricsRecorder } from '../../../src/runtime/device/generation-metrics.ts';
import type { ForwardResult, Verifier } from '../../../src/runtime/device/verifier.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';

const verifier = { bytesUp: 0, bytesDown: 0 } as Verifier;

function result(queueMs: number, computeMs: number): ForwardResult {
  const latency = { baseMs: 1, perTokenMs: 0.1 };
  return {
    hidden: new Float32Array(4),
    rows: 1,
    queueMs,
    computeMs,
    latency,
    roundTripMs: 50,
    bytesUp: 8,
    bytesDown: 8,
  };
}

test("chunks the cloud answered from one merged run count that run's compute once", () => {
  const recorder = new MetricsRecorder(verifier, new FixedThresholdPolicy(0.6, 4));
  // Chunks 1 and 2 ran alone (20 ms, then 20 ms again: the same figure, but a whole run later); chunks 3 and 4 were
  // queued together and ran as one 31.5 ms run, whose answers arrive back to back.
  recorder.chunkAnswered(64, 5, result(0, 20), 100);
  recorder.chunkAnswered(64, 5, result(2, 20), 121);
  recorder.chunkAnswered(64, 5, result(9, 31.5), 153);
  recorder.chunkAnswered(64, 5, result(3, 31.5), 153.2);
  recorder.round(result(1, 4), 2, 0.5, { predrafted: false, branchUsed: false, advised: false });
  assert.equal(recorder.metrics.cloudComputeMs, 20 + 20 + 31.5 + 4);
  assert.equal(recorder.metrics.cloudQueueMs, 0 + 2 + 9 + 3 + 1);
  // Each chunk's own record keeps the figure the cloud sent.
  assert.deepEqual(
    recorder.metrics.prefillChunks.map((c) => c.computeMs),
    [20, 20, 31.5, 31.5],
  );
});
