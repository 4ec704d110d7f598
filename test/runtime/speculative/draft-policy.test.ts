import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AcceptanceModel,
  AutoDraftPolicy,
  FixedThresholdPolicy,
  type DraftPolicy,
} from '../../../src/runtime/speculative/draft-policy.ts';

test('the fixed policy stops below η and at the draft limit', () => {
  const policy = new FixedThresholdPolicy(0.6, 2);
  assert.equal(policy.keep(0.7, 1, 1, 1), true);
  assert.equal(policy.keep(0.5, 1, 1, 1), false);
  assert.equal(policy.keep(0.9, 3, 1, 1), false);
});

/** How many drafts the policy keeps for a chain of equally confident drafts. */
function draftLength(policy: DraftPolicy, confidence: number): number {
  let survival = 1,
    expected = 1,
    k = 0;
  while (policy.keep(confidence, k + 1, survival, expected)) {
    k++;
    survival *= policy.acceptance(confidence);
    expected += survival;
  }
  return k;
}

function train(policy: AutoDraftPolicy, acceptRate: number, verifyMs: number, draftStepMs: number) {
  for (let r = 0; r < 40; r++) {
    const confidences = [0.45, 0.45, 0.45, 0.45];
    const accepted = confidences.findIndex((_, i) => (r * 7 + i * 3) % 10 >= acceptRate * 10);
    policy.observe({ confidences, accepted: accepted < 0 ? 4 : accepted, verifyMs, draftStepMs });
  }
}

test('the auto policy starts at the manifest threshold, then drafts longer when verification is slow', () => {
  const auto = new AutoDraftPolicy(0.6, 6);
  assert.equal(draftLength(auto, 0.45), 0, 'before measurements it behaves like η = 0.6');
  train(auto, 0.8, 5, 1);
  const fastCloud = draftLength(auto, 0.45);
  const loaded = new AutoDraftPolicy(0.6, 6);
  train(loaded, 0.8, 80, 1);
  const slowCloud = draftLength(loaded, 0.45);
  assert.ok(slowCloud > fastCloud, `slow verification ${slowCloud} drafts vs fast ${fastCloud}`);
  assert.ok(slowCloud <= 6);
});

test('the auto policy drafts less on text where drafts are rejected', () => {
  const easy = new AutoDraftPolicy(0.6, 6);
  train(easy, 0.9, 20, 2);
  const hard = new AutoDraftPolicy(0.6, 6);
  train(hard, 0.1, 20, 2);
  assert.ok(draftLength(hard, 0.45) < draftLength(easy, 0.45));
  assert.ok(hard.acceptance(0.45) < 0.3);
});

test('acceptance is measured for both policies, from judged drafts only', () => {
  const model = new AcceptanceModel();
  assert.equal(model.acceptance(0.35), 0.35, 'prior: a(c) = c');
  // Three drafts of confidence 0.35, the second rejected: the first counts as kept, the second as rejected, and
  // the third — never judged — not at all.
  for (let r = 0; r < 50; r++) model.observe({ confidences: [0.35, 0.35, 0.35], accepted: 1 });
  assert.ok(Math.abs(model.acceptance(0.35) - 0.5) < 0.1, `${model.acceptance(0.35)}`); // an EMA of 1, 0, 1, 0, …
  // Unconfident drafts that are always kept: the fixed policy's survival estimate follows the measurement.
  const fixed = new FixedThresholdPolicy(0, 6);
  for (let r = 0; r < 50; r++) fixed.observe({ confidences: [0.15, 0.15, 0.15], accepted: 3, verifyMs: 10 });
  assert.ok(fixed.acceptance(0.15) > 0.95);
});

test('a draft the policy stops at is measured from the last verified row, so a low estimate can recover', () => {
  // Calibrated as the adapter of the default model is not: drafts of confidence 0.05 that the target keeps.
  const auto = new AutoDraftPolicy(0.6, 6, 1);
  for (let r = 0; r < 5; r++) auto.observe({ confidences: [0.05], accepted: 0, verifyMs: 12, draftStepMs: 1.5 });
  assert.equal(draftLength(auto, 0.05), 0, 'a(0.05) measured near 0: the policy stops before such a draft');
  // Every round now uploads no draft; the declined one would have been kept.
  for (let r = 0; r < 20; r++)
    auto.observe({ confidences: [], accepted: 0, verifyMs: 12, declined: { confidence: 0.05, acceptance: 1 } });
  assert.ok(auto.acceptance(0.05) > 0.9, `${auto.acceptance(0.05)}`);
  assert.ok(draftLength(auto, 0.05) > 0, 'it drafts at that confidence again');
});

test('a declined draft counts only when every uploaded draft was accepted', () => {
  const model = new AcceptanceModel();
  // The second of two drafts was rejected: the verified rows say nothing about the draft after it.
  for (let r = 0; r < 20; r++)
    model.observe({ confidences: [0.95, 0.95], accepted: 1, declined: { confidence: 0.05, acceptance: 1 } });
  assert.equal(model.acceptance(0.05), 0.05, 'still the prior');
  model.observe({ confidences: [0.95], accepted: 1, declined: { confidence: 0.05, acceptance: 0.5 } });
  assert.equal(model.acceptance(0.05), 0.5, 'a fractional acceptance (sampling) is measured as it is');
});
