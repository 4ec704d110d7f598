import { test } from 'node:test';
import assert from 'node:assert/strict';
import { acceptGreedy, acceptSampled } from '../../../src/runtime/speculative/acceptance.ts';
import { verifyRound } from '../../../src/runtime/speculative/verify-round.ts';
import { createSampler, type Choice, type Sampler } from '../../../src/runtime/speculative/sampler.ts';

test('greedy acceptance commits the matching prefix plus the target token after it', () => {
  assert.deepEqual(acceptGreedy([5, 6, 7], [5, 6, 9, 1]), { accepted: 2, next: 9 });
  assert.deepEqual(acceptGreedy([5, 6], [5, 6, 8]), { accepted: 2, next: 8 });
  assert.deepEqual(acceptGreedy([], [3]), { accepted: 0, next: 3 });
  assert.deepEqual(acceptGreedy([4], [3, 1]), { accepted: 0, next: 3 });
});

function seeded(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

test('speculative sampling reproduces the target distribution (chi-square over 20k trials)', () => {
  const p = Float64Array.from([0.5, 0.3, 0.15, 0.05]);
  const q = Float64Array.from([0.1, 0.2, 0.3, 0.4]);
  const random = seeded(7);
  const counts = [0, 0, 0, 0];
  const trials = 20000;
  for (let t = 0; t < trials; t++) {
    const draft = (() => {
      let r = random();
      for (let i = 0; i < 4; i++) {
        r -= q[i];
        if (r < 0) return i;
      }
      return 3;
    })();
    const outcome = acceptSampled([draft], [q], [p, p], random);
    // The first committed token: the draft if accepted, else the resampled correction.
    counts[outcome.accepted === 1 ? draft : outcome.next]++;
  }
  const chi = counts.reduce((sum, c, i) => sum + (c - trials * p[i]) ** 2 / (trials * p[i]), 0);
  assert.ok(chi < 16.27, `chi-square ${chi.toFixed(2)} exceeds the p=0.001 critical value for 3 dof; counts ${counts}`);
});

test('identical draft and target distributions accept every draft', () => {
  const p = Float64Array.from([0.25, 0.25, 0.5]);
  const outcome = acceptSampled([2, 0, 1], [p, p, p], [p, p, p, p], seeded(1));
  assert.equal(outcome.accepted, 3);
});

test("a declined draft's acceptance from the target's row: the argmax greedy, min(1, p/q) sampling", () => {
  const row = new Float32Array([0, 2, 1]);
  // No draft uploaded, so the round keeps every one and its only row is the target at the declined draft.
  const declinedAcceptance = (nextGuess: Choice, sampler: Sampler) =>
    verifyRound({ drafts: [], draftProbs: [], nextGuess }, [row], sampler).declined?.acceptance;
  const greedy = createSampler({ temperature: 0, topP: 1, seed: 0 });
  assert.equal(declinedAcceptance({ token: 1, confidence: 0.2 }, greedy), 1);
  assert.equal(declinedAcceptance({ token: 2, confidence: 0.5 }, greedy), 0);
  const sampling = createSampler({ temperature: 1, topP: 1, seed: 0 });
  const p = sampling.distribution(row);
  const q = Float64Array.from([0.1, 0.1, 0.8]);
  assert.ok(Math.abs(declinedAcceptance({ token: 2, confidence: 0.8, probs: q }, sampling)! - p[2] / 0.8) < 1e-12);
  assert.equal(declinedAcceptance({ token: 1, confidence: 0.8, probs: q }, sampling), 1, 'p > q: always kept');
  // A round that rejects an uploaded draft judges no declined draft.
  const rejected = verifyRound(
    { drafts: [2], draftProbs: [], nextGuess: { token: 1, confidence: 0.9 } },
    [row, row],
    greedy,
  );
  assert.equal(rejected.declined, undefined);
});
