/**
 * The sampler's boundary: a row with a NaN or +Infinity logit (or none finite) is refused with HatError('RUNTIME')
 * instead of quietly choosing token 0 or the last id; and a non-finite draft confidence does not crash the policy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import { argmax, greedyChoice, makeSampler, samplingDistribution, softmax } from '../../src/runtime/sampling.ts';
import { choose, createSampler } from '../../src/runtime/speculative/sampler.ts';
import { verifyRound } from '../../src/runtime/speculative/verify-round.ts';
import { AcceptanceModel, AutoDraftPolicy, FixedThresholdPolicy } from '../../src/runtime/speculative/draft-policy.ts';

const refused = (what: RegExp) => (error: unknown) =>
  error instanceof HatError && error.code === 'RUNTIME' && what.test(error.message) && !!error.hint;

const BAD_ROWS: Array<[string, Float32Array, RegExp]> = [
  ['NaN first', Float32Array.of(Number.NaN, 5, 1, 0), /logit 0 of 4 is NaN/],
  ['NaN inside', Float32Array.of(0, 5, Number.NaN, 1), /logit 2 of 4 is NaN/],
  ['+Infinity', Float32Array.of(0, 1, Number.POSITIVE_INFINITY, 2, 0.5), /logit 2 of 5 is Infinity/],
  ['+Infinity first, NaN later', Float32Array.of(Number.POSITIVE_INFINITY, 0, Number.NaN), /logit 0 of 3 is Infinity/],
  ['all -Infinity', new Float32Array(3).fill(Number.NEGATIVE_INFINITY), /all 3 logits are -Infinity/],
  ['empty', new Float32Array(0), /empty/],
];

test('a NaN, a +Infinity or no finite logit is refused by every way of choosing a token', () => {
  const sampled = createSampler({ temperature: 0.8, topP: 0.9, seed: 1 });
  const greedy = createSampler({ temperature: 0, topP: 1, seed: 1 });
  for (const [name, row, message] of BAD_ROWS) {
    const check = (what: string, run: () => unknown) => assert.throws(run, refused(message), `${name}: ${what}`);
    check('argmax', () => argmax(row));
    check('greedyChoice', () => greedyChoice(row));
    check('softmax', () => softmax(row));
    check('greedy distribution', () => samplingDistribution(row, { temperature: 0, topP: 1 }));
    check('sampled distribution', () => samplingDistribution(row, { temperature: 1, topP: 0.9 }));
    check('greedy makeSampler', () => makeSampler({ temperature: 0, topP: 1 })(row));
    check('seeded makeSampler', () => makeSampler({ temperature: 1, topP: 1, seed: 1 })(row));
    check('choose, greedy', () => choose(greedy, row));
    check('choose, sampled', () => choose(sampled, row));
    check('verifyRound, greedy', () => verifyRound({ drafts: [], draftProbs: [] }, [row], greedy));
    check('verifyRound, sampled', () => verifyRound({ drafts: [], draftProbs: [] }, [row], sampled));
  }
});

test('-Infinity entries are masked tokens: probability 0, never chosen, the rest unchanged', () => {
  const masked = Float32Array.of(1, Number.NEGATIVE_INFINITY, 3, 2, Number.NEGATIVE_INFINITY);
  const finite = Float32Array.of(1, 3, 2);
  assert.equal(argmax(masked), 2);
  assert.deepEqual(greedyChoice(masked), { token: 2, probability: greedyChoice(finite).probability });
  const p = softmax(masked, 0.7);
  const q = softmax(finite, 0.7);
  assert.deepEqual([p[0], p[2], p[3]], [q[0], q[1], q[2]]);
  assert.equal(p[1], 0);
  assert.equal(p[4], 0);
  const s = makeSampler({ temperature: 1, topP: 1, seed: 3 });
  for (let i = 0; i < 200; i++) assert.ok([0, 2, 3].includes(s(masked)));
});

test('a NaN confidence does not crash the acceptance model or the policies (it counts in the lowest decile)', () => {
  const model = new AcceptanceModel();
  model.observe({ confidences: [Number.NaN, 0.95], accepted: 1 });
  model.observe({ confidences: [], accepted: 0, declined: { confidence: Number.NaN, acceptance: 1 } });
  // Both NaN-confidence observations (accepted, then declined with acceptance 1) went to the lowest decile.
  assert.equal(model.acceptance(0.05), 1);
  assert.equal(model.acceptance(0.95), 0, 'the first rejected draft');
  assert.equal(model.acceptance(Number.NaN), 1);
  for (const policy of [new FixedThresholdPolicy(0.6, 6), new AutoDraftPolicy(0.6, 16)]) {
    assert.doesNotThrow(() =>
      policy.observe({
        confidences: [Number.NaN],
        accepted: 0,
        verifyMs: 5,
        draftStepMs: 1,
        declined: { confidence: Number.NaN, acceptance: 1 },
      }),
    );
    assert.doesNotThrow(() => policy.keep(Number.NaN, 1, 1, 1));
  }
  // Valid confidences land in the deciles they always did: 1 in the top one, 0.35 in the fourth, 0 in the lowest.
  const deciles = new AcceptanceModel();
  deciles.observe({ confidences: [1, 0.35, 0], accepted: 2 });
  assert.deepEqual(
    [0.95, 0.3, 0.39, 0.01, 0.5].map((c) => deciles.acceptance(c)),
    [1, 1, 1, 0, 0.5],
  );
});
