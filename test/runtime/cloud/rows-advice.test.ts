/** The cloud's rows advice: the batch budget shared by the sessions that verify together, never below one row. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adviseRows, BUSY_TAU_MS, SATURATED_BUSY_SHARE } from '../../../src/runtime/cloud/rows-advice.ts';
import { BusyShare } from '../../../src/runtime/ema.ts';
import type { BatchLimits } from '../../../src/runtime/cloud/scheduler.ts';

const limits: BatchLimits = { maxBatch: 16, maxBatchTokens: 32, smallRows: 8, batchableRows: Infinity };

test('the budget is shared by the sessions verifying together, at most --max-batch of them, at least 1 row', () => {
  assert.equal(adviseRows(limits, 1, 1, 'saturated'), 32, 'alone: any round fits');
  assert.equal(adviseRows(limits, 0.4, 1, 'saturated'), 32, 'a demand under one session counts as one');
  assert.equal(adviseRows(limits, 4, 1, 'saturated'), 8);
  assert.equal(adviseRows(limits, 5.5, 1, 'saturated'), 5, 'the smoothed demand may be fractional');
  assert.equal(adviseRows(limits, 30, 1, 'saturated'), 2, '30 sessions share 16-session runs');
  assert.equal(adviseRows({ ...limits, maxBatch: 64 }, 40, 1, 'saturated'), 1, 'never below one row');
});

test('no advice where runs hold one request: --max-batch 1, and multi-row requests on a single-row split', () => {
  assert.equal(adviseRows({ ...limits, maxBatch: 1 }, 30, 1, 'saturated'), 0);
  assert.equal(adviseRows({ ...limits, batchableRows: 1 }, 30, 1, 'saturated'), 0);
});

test('no advice below saturation: rows are scarce only when the worker is busy nearly all the time', () => {
  assert.equal(adviseRows(limits, 4, SATURATED_BUSY_SHARE - 0.01, 'saturated'), 0, 'below saturation: any round');
  assert.equal(adviseRows(limits, 4, SATURATED_BUSY_SHARE, 'saturated'), 8, 'saturated: the budget shared');
  assert.equal(adviseRows(limits, 4, 0, 'always'), 8, "'always': at any load");
  assert.equal(adviseRows(limits, 4, 1, 'off'), 0, "'off': never");
});

test("the busy share follows the worker's recent time: near 1 when always busy, decaying while idle", () => {
  const share = new BusyShare(BUSY_TAU_MS);
  assert.equal(share.valueAt(0), 0, 'nothing ran yet');
  // Back-to-back 5-ms runs for 5 s: busy all the time.
  for (let t = 5; t <= 5000; t += 5) share.busy(t, 5);
  assert.ok(Math.abs(share.valueAt(5000) - 1) < 0.01, `${share.valueAt(5000)}`);
  // One second idle: e^-1 of it is left.
  assert.ok(Math.abs(share.valueAt(6000) - Math.exp(-1)) < 0.01, `${share.valueAt(6000)}`);
  // 5-ms runs every 10 ms: half busy.
  const half = new BusyShare(BUSY_TAU_MS);
  for (let t = 10; t <= 5000; t += 10) half.busy(t, 5);
  assert.ok(Math.abs(half.valueAt(5000) - 0.5) < 0.02, `${half.valueAt(5000)}`);
});
