import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import {
  msPerToken,
  simulateRounds,
  sweepThresholds,
  top1Agreement,
  type DraftTrace,
} from '../../src/train-adapter/draft-eval.ts';

const targets = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const oneMiss: DraftTrace = {
  targetTokens: targets,
  draftTokens: [1, 2, 99, 4, 5, 6, 7, 8, 9, 10],
  draftProbabilities: new Array(10).fill(0.9),
};

test('top-1 agreement counts matching positions over all traces', () => {
  assert.equal(top1Agreement([oneMiss]), 0.9);
  assert.equal(
    top1Agreement([oneMiss, { targetTokens: [1, 2], draftTokens: [0, 0], draftProbabilities: [1, 1] }]),
    9 / 12,
  );
});

test('a round commits the accepted drafts plus one token, with at most 6 drafts', () => {
  // Round 1 drafts positions 0–5, accepts 0–1, commits 3. Round 2 drafts 3–8, all accepted, and commits 7:
  // the six drafts plus the cloud's own token at position 9.
  const stats = simulateRounds([oneMiss], 0.6);
  assert.deepEqual(
    {
      rounds: stats.rounds,
      committed: stats.committed,
      drafts: stats.drafts,
      accepted: stats.accepted,
      draftSteps: stats.draftSteps,
    },
    { rounds: 2, committed: 10, drafts: 12, accepted: 8, draftSteps: 12 },
  );
  assert.equal(stats.meanTokensPerRound, 5);
  assert.equal(stats.acceptanceRate, 8 / 12);
  // The draft limit caps a perfect drafter at limit + 1 tokens per round.
  const perfect = simulateRounds(
    [{ targetTokens: targets, draftTokens: targets, draftProbabilities: new Array(10).fill(1) }],
    0.6,
    3,
  );
  // 3+1, 3+1, then 2 drafts reach the end
  assert.deepEqual([perfect.rounds, perfect.committed, perfect.accepted], [3, 10, 8]);
});

test('drafting stops at the first draft below the threshold, which still costs a step', () => {
  const trace: DraftTrace = {
    targetTokens: targets,
    draftTokens: targets,
    draftProbabilities: [0.9, 0.9, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
  };
  // Round 1: drafts 0, 1, stops at 2 (3 steps) → commits 0, 1 + the cloud's token at 2. Round 2 from 3: drafts 3–8
  // (6 steps), commits 7 → done.
  const stats = simulateRounds([trace], 0.6);
  assert.deepEqual([stats.rounds, stats.committed, stats.drafts, stats.draftSteps], [2, 10, 8, 9]);
  // Threshold 1 > every probability: no drafts, one token per round.
  const none = simulateRounds([trace], 1);
  assert.deepEqual(
    [none.rounds, none.committed, none.drafts, none.draftSteps, none.meanTokensPerRound],
    [10, 10, 0, 10, 1],
  );
  // Threshold 0 never stops early.
  assert.equal(simulateRounds([trace], 0).draftSteps, 9); // 6 drafts + 1, then the 3 left
});

test('the threshold sweep picks the lowest expected time per committed token', () => {
  const trace: DraftTrace = {
    targetTokens: targets,
    draftTokens: [1, 2, 0, 4, 0, 6, 7, 0, 9, 10],
    draftProbabilities: [0.9, 0.7, 0.5, 0.9, 0.3, 0.9, 0.9, 0.1, 0.7, 0.9],
  };
  const cost = { draftStepMs: 1, verifyMs: 10 };
  const sweep = sweepThresholds([trace], cost);
  assert.deepEqual(
    sweep.rows.map((r) => r.threshold),
    [0, 0.2, 0.4, 0.6, 0.8],
  );
  for (const row of sweep.rows) assert.equal(row.msPerToken, (row.draftSteps * 1 + row.rounds * 10) / row.committed);
  const fastest = Math.min(...sweep.rows.map((r) => r.msPerToken));
  assert.equal(sweep.rows.find((r) => r.threshold === sweep.best)!.msPerToken, fastest);
  // Expensive drafting favours drafting only the confident tokens.
  const costly = sweepThresholds([trace], { draftStepMs: 50, verifyMs: 10 });
  assert.ok(costly.best >= sweep.best);
  assert.equal(msPerToken(simulateRounds([trace], 0), cost), sweep.rows[0].msPerToken);
});

test('bad thresholds and mismatched traces are rejected', () => {
  assert.throws(
    () => simulateRounds([oneMiss], 1.5),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  assert.throws(
    () => top1Agreement([{ targetTokens: [1, 2], draftTokens: [1], draftProbabilities: [1] }]),
    (e: HatError) => e.code === 'INTERNAL',
  );
});
