/** The cloud's rows advice: the batch budget shared by the sessions that verify together, never below one row. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adviseRows } from '../../../src/runtime/cloud/rows-advice.ts';
import type { BatchLimits } from '../../../src/runtime/cloud/scheduler.ts';

const limits: BatchLimits = { maxBatch: 16, maxBatchTokens: 32, smallRows: 8, batchableRows: Infinity };

test('the budget is shared by the sessions verifying together, at most --max-batch of them, at least 1 row', () => {
  assert.equal(adviseRows(limits, 1), 32, 'alone: any round fits');
  assert.equal(adviseRows(limits, 0.4), 32, 'a demand under one session counts as one');
  assert.equal(adviseRows(limits, 4), 8);
  assert.equal(adviseRows(limits, 5.5), 5, 'the smoothed demand may be fractional');
  assert.equal(adviseRows(limits, 30), 2, '30 sessions share 16-session runs');
  assert.equal(adviseRows({ ...limits, maxBatch: 64 }, 40), 1, 'never below one row');
});

test('no advice where runs hold one request: --max-batch 1, and multi-row requests on a single-row split', () => {
  assert.equal(adviseRows({ ...limits, maxBatch: 1 }, 30), 0);
  assert.equal(adviseRows({ ...limits, batchableRows: 1 }, 30), 0);
});
