import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  budgetFromProbe,
  cheapestMsPerRow,
  KNEE_PROBE_ROWS,
  kneeOf,
  PROBE_ROUNDS,
  PROBE_RUN_LIMIT_MS,
  probeRows,
  probeTimes,
} from '../../../src/runtime/cloud/batch-knee.ts';

const times = (msPerRun: number[]) => msPerRun.map((ms, i) => ({ rows: KNEE_PROBE_ROWS[i], ms }));

test('the knee: the fewest rows whose cost per row is within 25 % of the cheapest row probed', () => {
  // Measured on this VM at start of serve-cloud (one core): the Qwen2.5-0.5B-shaped middle, 10.3 … 4.26 ms per row.
  assert.equal(kneeOf(times([82.4, 111.6, 168.2, 299.9, 545.6])), 32);
  // A fixed 50 ms per run over 2 ms per row: 64 rows (2.78 ms per row) are within 25 % of 128's 2.39; 32 are not.
  assert.equal(kneeOf(times([66, 82, 114, 178, 306])), 64);
  // A part whose runs cost the same per row at every size: the smallest probe is already at the knee.
  assert.equal(kneeOf(times([8, 16, 32, 64, 128])), 8);
  // Runs that get dearer per row past some size (caches overflow): the knee is below the cheapest size.
  assert.equal(kneeOf(times([40, 48, 64, 120, 400])), 32);
  // Order does not matter; failed or empty probes are ignored.
  assert.equal(kneeOf([...times([66, 82, 114, 178, 306])].reverse()), 64);
  assert.equal(kneeOf([{ rows: 16, ms: 0 }]), undefined);
  assert.equal(kneeOf([]), undefined);
});

test('the cheapest cost per row the probe measured', () => {
  const times = [
    { rows: 8, ms: 4 },
    { rows: 64, ms: 9.6 },
    { rows: 128, ms: 19.2 },
    { rows: 32, ms: 0 }, // not timed
  ];
  assert.equal(cheapestMsPerRow(times), 0.15);
  assert.equal(cheapestMsPerRow([]), undefined);
});

test("the probe's rows fit the session context", () => {
  assert.deepEqual(probeRows(4096), KNEE_PROBE_ROWS);
  assert.deepEqual(probeRows(64), [8, 16, 32, 64]);
  assert.deepEqual(probeRows(4), []);
});

test('the budget: the knee where the probe bracketed it, else at least the fallback', () => {
  // Cheapest per row at 64 rows, dearer at 128: bracketed, the knee stands even below the fallback.
  assert.deepEqual(budgetFromProbe(times([40, 48, 64, 120, 400]), 64), { rows: 32, bracketed: true });
  // Still getting cheaper at 128 rows (the knee lies beyond the probe): at least the fallback.
  assert.deepEqual(budgetFromProbe(times([66, 82, 114, 178, 306]), 512), { rows: 512, bracketed: false });
  assert.deepEqual(budgetFromProbe(times([66, 82, 114, 178, 306]), 32), { rows: 64, bracketed: false });
  // A probe cut short by a slow run: judged on what it timed.
  assert.deepEqual(budgetFromProbe(times([900, 1600]), 32), { rows: 32, bracketed: false });
  assert.equal(budgetFromProbe([], 32), undefined);
});

test('the probe interleaves its sizes, so a slow spell of the machine does not move the knee', async () => {
  // The default split's probe on this VM (8: 0.27, 16: 0.18, 32: 0.12, 64: 0.12, 128: 0.10 ms per row): knee 32.
  const truth = new Map([
    [8, 2.16],
    [16, 2.88],
    [32, 3.84],
    [64, 7.68],
    [128, 12.8],
  ]);
  assert.equal(kneeOf([...truth].map(([rows, ms]) => ({ rows, ms }))), 32);
  const calls = 1 + PROBE_ROUNDS * KNEE_PROBE_ROWS.length;
  // A spell that makes two consecutive runs 1.5x slower, wherever it falls. The probe before took each size's best of
  // two back-to-back runs: a spell over both of 32's made its budget 64.
  for (let spell = 0; spell < calls - 1; spell++) {
    const order: number[] = [];
    const times = await probeTimes(KNEE_PROBE_ROWS, async (rows) => {
      order.push(rows);
      const slow = order.length - 1 === spell || order.length - 1 === spell + 1;
      return truth.get(rows)! * (slow ? 1.5 : 1);
    });
    assert.deepEqual(order, [8, ...Array.from({ length: PROBE_ROUNDS }, () => KNEE_PROBE_ROWS).flat()]);
    assert.deepEqual(
      times,
      [...truth].map(([rows, ms]) => ({ rows, ms })),
    );
    assert.equal(kneeOf(times), 32, `spell at call ${spell}`);
  }
});

test('a size over the time limit in its best of two runs is the last size probed; one slow run is not', async () => {
  const order: number[] = [];
  const times = await probeTimes(KNEE_PROBE_ROWS, async (rows) => {
    order.push(rows);
    return rows >= 32 ? PROBE_RUN_LIMIT_MS + rows : rows;
  });
  assert.deepEqual(times, [
    { rows: 8, ms: 8 },
    { rows: 16, ms: 16 },
    { rows: 32, ms: PROBE_RUN_LIMIT_MS + 32 },
  ]);
  // Round 0 samples 32 twice before giving up on it; later rounds stop there too.
  assert.deepEqual(order, [8, 8, 16, 32, 32, ...Array.from({ length: PROBE_ROUNDS - 1 }, () => [8, 16, 32]).flat()]);
  // A cold first run at 64 rows (a new shape) over the limit, then runs well within it: every size is kept.
  const calls = new Map<number, number>();
  const cold = await probeTimes(KNEE_PROBE_ROWS, async (rows) => {
    calls.set(rows, (calls.get(rows) ?? 0) + 1);
    return rows === 64 && calls.get(rows) === 1 ? PROBE_RUN_LIMIT_MS * 3 : rows;
  });
  assert.deepEqual(
    cold.map((t) => t.rows),
    KNEE_PROBE_ROWS,
  );
  assert.equal(cold.find((t) => t.rows === 64)?.ms, 64);
  assert.deepEqual(await probeTimes([], async () => 1), []);
});
