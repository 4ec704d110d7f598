import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkPlanner } from '../../src/runtime/chunk-planner.ts';

/** Feeds the planner the results of back-to-back chunks over a link of `bytesPerMs` to a cloud with g(X). */
function feed(
  planner: ChunkPlanner,
  options: { size: number; count: number; bytesPerToken: number; bytesPerMs: number; g0: number; g1: number },
) {
  let linkFree = 0,
    cloudFree = 0;
  for (let i = 0; i < options.count; i++) {
    const bytes = options.size * options.bytesPerToken;
    const arrival = Math.max(0, linkFree) + bytes / options.bytesPerMs;
    linkFree = arrival;
    const start = Math.max(arrival, cloudFree);
    const computeMs = options.g0 + options.g1 * options.size;
    cloudFree = start + computeMs;
    planner.observeResult({
      bytesUp: bytes,
      sentAt: 0,
      resultAt: cloudFree,
      queueMs: start - arrival,
      computeMs,
      latency: { baseMs: options.g0, perTokenMs: options.g1 },
    });
  }
}

test("upload-bound: the chosen chunk sits at HAT's balance X·A/β = g₀ + g₁X", () => {
  const planner = new ChunkPlanner({ bytesPerToken: 1000, maxChunk: 4096, minChunk: 1 });
  planner.observeDevice(64, 0.064); // a fast device: the link is the bottleneck
  feed(planner, { size: 64, count: 20, bytesPerToken: 1000, bytesPerMs: 100, g0: 20, g1: 2 });
  assert.ok(Math.abs(planner.describe().uplinkMBps! - 0.1) < 1e-6, 'β recovered from pipelined results');
  // Balance: 10X = 20 + 2X ⇒ X = 2.5; the planner's grid lands next to it.
  const chosen = planner.next(10_000);
  assert.ok(chosen >= 2 && chosen <= 4, `chose ${chosen}`);
});

test('compute-bound: chunks trade per-chunk overhead against the unoverlapped ends', () => {
  const planner = new ChunkPlanner({ bytesPerToken: 10, maxChunk: 4096, minChunk: 16 });
  planner.observeDevice(64, 6.4); // 0.1 ms per token on the device
  assert.equal(planner.next(1024), 64, 'the link is not measured yet: a probe');
  feed(planner, { size: 64, count: 5, bytesPerToken: 10, bytesPerMs: 10_000, g0: 5, g1: 1.2 });
  const chosen = planner.next(1024);
  // TTFT(X) ≈ 1.2·1024 + 5·1024/X + 0.1X is smallest near X = √(5·1024/0.1) ≈ 226.
  assert.ok(chosen > 120 && chosen < 400, `chose ${chosen}`);
  assert.ok(planner.predictMs(1024, chosen) < planner.predictMs(1024, 1024));
  assert.ok(planner.predictMs(1024, chosen) < planner.predictMs(1024, 16));
});

test('the first chunk is a probe; no runt chunk is left; a short remainder goes whole', () => {
  const planner = new ChunkPlanner({ bytesPerToken: 10, maxChunk: 512, minChunk: 16 });
  assert.equal(planner.next(10), 10);
  assert.equal(planner.next(1000), 64, 'the device has not been timed yet');
  planner.observeDevice(64, 0.64);
  feed(planner, { size: 64, count: 2, bytesPerToken: 10, bytesPerMs: 1000, g0: 20, g1: 0.01 });
  const chosen = planner.next(520);
  assert.ok(chosen <= 512 && 520 - chosen >= 16, `chose ${chosen}: within the frame limit, no runt left`);
  const roomy = new ChunkPlanner({ bytesPerToken: 10, maxChunk: 4096, minChunk: 16 });
  roomy.observeDevice(64, 0.64);
  feed(roomy, { size: 64, count: 2, bytesPerToken: 10, bytesPerMs: 1000, g0: 20, g1: 0.01 });
  assert.equal(roomy.next(520), 520, 'per-chunk cloud overhead favours one chunk when the frame limit allows it');
});
