/** The run-cost model the scheduler consults (src/runtime/cloud/run-cost.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ERROR, RunCostModel, type RunShape } from '../../../src/runtime/cloud/run-cost.ts';
import { seededRandom } from '../../../src/random.ts';

const truth = ({ sessions, rows, past, inPlace }: RunShape) =>
  (sessions > 1 ? 0.4 + (inPlace ? 0 : 0.001 * sessions * past) : 0) +
  0.8 +
  0.3 * sessions +
  0.05 * sessions * rows +
  0.002 * sessions * (past + rows) +
  1e-5 * sessions * rows * (past + rows);

test('after runs of one session and of several it recovers a cost of its form (verifications, chunks)', () => {
  const model = new RunCostModel();
  const random = seededRandom(5);
  const shape = (sessions: number): RunShape => ({
    sessions,
    rows: random.uniform() < 0.2 ? 32 + Math.floor(random.uniform() * 64) : 1 + Math.floor(random.uniform() * 7),
    past: Math.floor(random.uniform() * 1000),
    inPlace: sessions > 1 && random.uniform() < 0.3,
  });
  for (let i = 0; i < 20; i++) {
    const solo = shape(1);
    model.observe(solo, truth(solo));
  }
  assert.equal(model.predict(shape(1)), undefined, 'no batched run seen yet');
  for (let i = 0; i < 200; i++) {
    const s = shape(i % 3 === 0 ? 1 : 2 + (i % 9));
    model.observe(s, truth(s));
  }
  assert.ok(model.ready);
  for (const s of [
    shape(1),
    shape(4),
    shape(16),
    { sessions: 8, rows: 5, past: 1024 },
    { sessions: 2, rows: 64, past: 800 },
    { sessions: 6, rows: 3, past: 700, inPlace: true },
  ]) {
    assert.ok(Math.abs(model.predict(s)! - truth(s)) < 1e-3 * truth(s), JSON.stringify(s));
  }
});

test('recent runs outweigh old ones: after a slowdown the predictions follow', () => {
  const model = new RunCostModel();
  const random = seededRandom(9);
  const observe = (factor: number, n: number) => {
    for (let i = 0; i < n; i++) {
      const s = { sessions: 1 + (i % 5), rows: 1 + (i % 4), past: Math.floor(random.uniform() * 800) };
      model.observe(s, factor * truth(s));
    }
  };
  observe(1, 300);
  observe(2, 2000);
  const s = { sessions: 4, rows: 5, past: 500 };
  assert.ok(Math.abs(model.predict(s)! / truth(s) - 2) < 0.01, String(model.predict(s)! / truth(s)));
});

test('a model that mispredicts the runs it then sees gives no answer (the scheduler then batches what fits)', () => {
  const model = new RunCostModel();
  const random = seededRandom(11);
  const shape = (i: number): RunShape => ({ sessions: 1 + (i % 6), rows: 1 + (i % 4), past: 100 + (i % 50) });
  // Costs the form cannot follow: each run 0.5× or 2× its shape's cost at random.
  for (let i = 0; i < 300; i++) {
    const s = shape(i);
    model.observe(s, truth(s) * (random.uniform() < 0.5 ? 0.5 : 2));
  }
  assert.ok(model.ready);
  assert.ok(model.recentError! > MAX_ERROR, String(model.recentError));
  assert.equal(model.predict(shape(1)), undefined);
  // Once the runs it sees match its fit again, it answers again.
  for (let i = 0; i < 2000; i++) {
    const s = shape(i);
    model.observe(s, truth(s));
  }
  assert.ok(model.recentError! < 0.01, String(model.recentError));
  assert.ok(Math.abs(model.predict(shape(3))! / truth(shape(3)) - 1) < 0.01);
});

test('solo runs it predicts well do not vouch for batched runs it predicts badly', () => {
  const model = new RunCostModel();
  const shape = (i: number): RunShape => ({ sessions: i % 2 ? 1 : 2 + (i % 5), rows: 1 + (i % 4), past: 100 + i });
  for (let i = 0; i < 200; i++) model.observe(shape(i), truth(shape(i)));
  assert.ok(model.predict(shape(1)) !== undefined);
  // Batched runs now cost 3× what the fit says; solo runs stay as predicted.
  for (let i = 0; i < 20; i++) {
    const s = shape(2 * i);
    model.observe(s, 3 * truth(s));
    model.observe(shape(2 * i + 1), truth(shape(2 * i + 1)));
  }
  const { solo, batched } = model.recentErrors;
  assert.ok(solo! < MAX_ERROR && batched! > MAX_ERROR, JSON.stringify(model.recentErrors));
  assert.equal(model.predict(shape(1)), undefined);
});
