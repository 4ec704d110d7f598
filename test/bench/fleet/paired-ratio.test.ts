import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pairedRatios, type SessionPoint } from '../../../src/bench/fleet/paired-ratio.ts';

const point = (arrival: number, promptTokens: number, ttftMs: number, gapSumMs = 0, gaps = 0): SessionPoint => ({
  arrival,
  promptTokens,
  ttftMs,
  gapSumMs,
  gaps,
});

test('paired ratios: a constant ratio per pair has an interval of that ratio alone', () => {
  const uShape = [point(0, 128, 100, 200, 10), point(1, 896, 500, 300, 10), point(2, 384, 250, 100, 5)];
  const hat = uShape.map((u) => point(u.arrival, u.promptTokens, u.ttftMs / 2, u.gapSumMs / 4, u.gaps));
  const paired = pairedRatios(hat, uShape)!;
  assert.equal(paired.pairs, 3);
  assert.deepEqual(paired.ttft, { ratio: 0.5, low: 0.5, high: 0.5 });
  assert.deepEqual(paired.tbt, { ratio: 0.25, low: 0.25, high: 0.25 });
});

test('paired ratios: the ratio of means over every pair, inside an interval that resampling widens', () => {
  // TTFT means 150 / 300 = 0.5 over all pairs; a resample heavy in arrival 1 goes to 0.25, in arrival 0 to 1.
  const hat = [point(0, 128, 200, 20, 2), point(1, 896, 100, 60, 2)];
  const uShape = [point(0, 128, 200, 40, 2), point(1, 896, 400, 60, 2)];
  const paired = pairedRatios(hat, uShape, { resamples: 500, seed: 3 })!;
  assert.equal(paired.ttft.ratio, 0.5);
  assert.equal(paired.tbt!.ratio, 0.8, 'token-weighted: (20 + 60) / 4 over (40 + 60) / 4');
  assert.ok(paired.ttft.low <= 0.25 + 1e-12 && paired.ttft.high >= 1 - 1e-12, JSON.stringify(paired.ttft));
  assert.ok(paired.tbt!.low < 0.8 && paired.tbt!.high > 0.8);
  assert.deepEqual(pairedRatios(hat, uShape, { resamples: 500, seed: 3 }), paired, 'seeded: the same interval');
});

test('paired ratios: only arrivals completed in both runs pair; other prompts or too few pairs give none', () => {
  const uShape = [point(0, 128, 100), point(1, 896, 500), point(2, 384, 300)];
  const hat = [point(0, 128, 50), point(2, 384, 150), point(7, 128, 1)];
  const paired = pairedRatios(hat, uShape)!;
  assert.equal(paired.pairs, 2, 'arrival 1 failed in hat, arrival 7 exists in hat only');
  assert.equal(paired.ttft.ratio, 0.5);
  assert.equal(paired.tbt, undefined, 'no session had a gap');
  assert.equal(pairedRatios([point(0, 128, 50), point(1, 384, 9)], uShape), undefined, 'arrival 1: another prompt');
  assert.equal(pairedRatios([point(0, 128, 50)], uShape), undefined, 'one pair');
});
