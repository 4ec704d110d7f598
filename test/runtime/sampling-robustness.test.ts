/**
 * The sampler's boundary: a row with a NaN or +Infinity logit (or none finite) is refused with HatError('RUNTIME')
 * instead of quietly choosing token 0 or the last id; a non-finite draft confidence does not crash the policy; and
 * top-p, sorted only where the nucleus can be, keeps exactly what the whole-vocabulary sort kept.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import { seededRandom } from '../../src/random.ts';
import {
  argmax,
  drawFrom,
  greedyChoice,
  makeSampler,
  nucleus,
  samplingDistribution,
  seededUniform,
  softmax,
} from '../../src/runtime/sampling.ts';
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

/** The whole-vocabulary top-p as it was: a comparator sort of every index (stable, so ties keep index order). */
function nucleusBySortingEverything(probabilities: Float64Array, topP: number): Float64Array {
  if (topP >= 1) return probabilities;
  const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
  const out = new Float64Array(probabilities.length);
  let kept = 0;
  for (const id of order) {
    out[id] = probabilities[id];
    kept += probabilities[id];
    if (kept >= topP) break;
  }
  for (let i = 0; i < out.length; i++) out[i] /= kept;
  return out;
}

const identical = (a: Float64Array, b: Float64Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

test('top-p keeps bit-for-bit what sorting the whole vocabulary kept, ties lowest index first', () => {
  const random = seededRandom(11);
  const rows: Array<[string, Float32Array]> = [];
  for (const vocab of [1, 2, 7, 64, 3000, 20000]) {
    rows.push([`normal ${vocab}`, Float32Array.from({ length: vocab }, () => random.normal() * 3)]);
    // Few distinct values: ties everywhere, and at the cutoff.
    rows.push([`ties ${vocab}`, Float32Array.from({ length: vocab }, () => Math.floor(random.uniform() * 4))]);
    rows.push([
      `peaked ${vocab}`,
      Float32Array.from({ length: vocab }, (_, i) => (i % 97 === 5 ? 12 : random.normal())),
    ]);
  }
  rows.push(['all equal', new Float32Array(1000).fill(0.25)]);
  rows.push(['one far ahead', Float32Array.from({ length: 5000 }, (_, i) => (i === 4321 ? 60 : random.normal()))]);
  rows.push(['masked', Float32Array.from({ length: 500 }, (_, i) => (i % 3 ? Number.NEGATIVE_INFINITY : i / 100))]);
  const topPs = [0, 1e-9, 0.1, 0.5, 0.9, 0.95, 0.999, 1 - 1e-16, 0.9999999999999999];
  for (const [name, logits] of rows) {
    for (const temperature of [0.3, 1, 5]) {
      const p = softmax(logits, temperature);
      for (const topP of topPs) {
        assert.ok(
          identical(nucleus(p, topP), nucleusBySortingEverything(p, topP)),
          `${name} T=${temperature} p=${topP}`,
        );
      }
    }
  }
  // Exact ties at the cutoff: the lowest indices are kept.
  assert.deepEqual(Array.from(nucleus(Float64Array.of(0.25, 0.25, 0.25, 0.25), 0.5)), [0.5, 0.5, 0, 0]);
  assert.deepEqual(Array.from(nucleus(Float64Array.of(0.1, 0.3, 0.3, 0.3), 0.5)), [0, 0.5, 0.5, 0]);
  // Raw probability rows with zeros, and ones that do not sum to 1.
  for (let trial = 0; trial < 200; trial++) {
    const p = Float64Array.from({ length: 1 + Math.floor(random.uniform() * 300) }, () =>
      random.uniform() < 0.3 ? 0 : Math.round(random.uniform() * 8) / 64,
    );
    for (const topP of [0, 0.3, 0.7, 0.99, 2]) {
      assert.ok(identical(nucleus(p, topP), nucleusBySortingEverything(p, topP)), `raw row ${trial} p=${topP}`);
    }
  }
});

test('seeded top-p sampling draws the same tokens as with the whole-vocabulary sort', () => {
  const random = seededRandom(5);
  const logits = Array.from({ length: 40 }, () => Float32Array.from({ length: 4096 }, () => random.normal() * 2.5));
  for (const topP of [0.5, 0.9, 0.95]) {
    const options = { temperature: 0.8, topP, seed: 9 };
    const sampler = makeSampler(options);
    const uniform = seededUniform(options.seed);
    for (const row of logits) {
      const reference = drawFrom(nucleusBySortingEverything(softmax(row, options.temperature), topP), uniform);
      assert.equal(sampler(row), reference);
    }
  }
});
