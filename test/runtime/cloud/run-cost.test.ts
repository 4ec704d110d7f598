/** The run-cost model the scheduler consults (src/runtime/cloud/run-cost.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ERROR, MIN_SOLO_RUNS, RunCostModel, type RunShape } from '../../../src/runtime/cloud/run-cost.ts';
import { seededRandom } from '../../../src/random.ts';

/** Per gathered cache position, ms. */
const GATHER = 0.001;

/** A session's share of a run: per row, per cache position, per row × position. */
const perSession = (rows: number, past: number) => 0.05 * rows + 0.002 * past + 1e-5 * rows * past;

/** A run's cost as the model composes it: 0.8 ms per run, every session padded, pasts gathered unless in place. */
const truth = ({ sessions, rows, past, pastSum, inPlace }: RunShape) =>
  0.8 + sessions * perSession(rows, past) + (sessions > 1 && !inPlace ? GATHER * (pastSum ?? sessions * past) : 0);

/** What a batched run's copies took (the gather), as the engine reports it. */
const copyOf = (shape: RunShape) => truth(shape) - truth({ ...shape, pastSum: 0 });

function observe(model: RunCostModel, shape: RunShape, factor = 1): void {
  model.observe(shape, factor * truth(shape), factor * copyOf(shape));
}

test('from solo runs (verifications and chunks) and the copies of gathered batches it predicts any batch', () => {
  const model = new RunCostModel();
  const random = seededRandom(5);
  const shape = (sessions: number): RunShape => {
    const past = Math.floor(random.uniform() * 1000);
    return {
      sessions,
      rows: random.uniform() < 0.2 ? 32 + Math.floor(random.uniform() * 64) : 1 + Math.floor(random.uniform() * 7),
      past,
      pastSum: sessions * past - Math.floor(random.uniform() * past),
      inPlace: sessions > 1 && random.uniform() < 0.3,
    };
  };
  for (let i = 0; i < MIN_SOLO_RUNS - 1; i++) observe(model, shape(1));
  assert.equal(model.ready, false);
  for (let i = 0; i < 40; i++) observe(model, shape(1));
  assert.ok(model.ready);
  assert.equal(model.predict(shape(1)), undefined, 'no batched run predicted yet: no answer');
  for (let i = 0; i < 100; i++) observe(model, shape(i % 3 === 0 ? 1 : 2 + (i % 9)));
  for (const s of [
    shape(1),
    shape(4),
    shape(16),
    { sessions: 8, rows: 5, past: 1024, pastSum: 5000 },
    { sessions: 2, rows: 64, past: 800 },
    { sessions: 6, rows: 3, past: 700, inPlace: true },
  ]) {
    assert.ok(Math.abs(model.predict(s)! - truth(s)) < 1e-3 * truth(s), JSON.stringify(s));
  }
});

test('recent runs outweigh old ones: after a slowdown the predictions follow', () => {
  const model = new RunCostModel();
  const random = seededRandom(9);
  const run = (factor: number, n: number) => {
    for (let i = 0; i < n; i++) {
      observe(model, { sessions: 1 + (i % 5), rows: 1 + (i % 4), past: Math.floor(random.uniform() * 800) }, factor);
    }
  };
  run(1, 300);
  run(2, 5000);
  const s = { sessions: 4, rows: 5, past: 500 };
  assert.ok(Math.abs(model.predict(s)! / truth(s) - 2) < 0.01, String(model.predict(s)! / truth(s)));
});

test('a model that mispredicts the runs it then sees gives no answer (the scheduler then batches what fits)', () => {
  const model = new RunCostModel();
  const random = seededRandom(11);
  const shape = (i: number): RunShape => ({ sessions: 1 + (i % 6), rows: 1 + (i % 4), past: 100 + (i % 50) });
  // Costs the form cannot follow: each run 0.5× or 2× its shape's cost at random.
  for (let i = 0; i < 300; i++) observe(model, shape(i), random.uniform() < 0.5 ? 0.5 : 2);
  assert.ok(model.ready);
  assert.ok(model.recentError! > MAX_ERROR, String(model.recentError));
  assert.equal(model.predict(shape(1)), undefined);
  assert.equal(model.answering, false);
  // Once the runs it sees match its fit again, it answers again.
  for (let i = 0; i < 6000; i++) observe(model, shape(i));
  assert.ok(model.recentError! < 0.01, String(model.recentError));
  assert.equal(model.answering, true);
  assert.ok(Math.abs(model.predict(shape(3))! / truth(shape(3)) - 1) < 0.01);
});

test('solo runs it predicts well do not vouch for batched runs it predicts badly', () => {
  const model = new RunCostModel();
  const shape = (i: number): RunShape => ({ sessions: i % 2 ? 1 : 2 + (i % 5), rows: 1 + (i % 4), past: 100 + i });
  for (let i = 0; i < 200; i++) observe(model, shape(i));
  assert.ok(model.predict(shape(1)) !== undefined);
  // Batched runs now cost 3× what the composition says (as where a run's cost per row falls with more rows); solo
  // runs stay as predicted.
  for (let i = 0; i < 20; i++) {
    const s = shape(2 * i);
    model.observe(s, 3 * truth(s), copyOf(s));
    observe(model, shape(2 * i + 1));
  }
  const { solo, batched } = model.recentErrors;
  assert.ok(solo! < MAX_ERROR && batched! > MAX_ERROR, JSON.stringify(model.recentErrors));
  assert.equal(model.predict(shape(1)), undefined);
});

test('it learns from solo runs only, so refusing batches cannot lock it in; batched runs teach it the gather', () => {
  const model = new RunCostModel();
  const random = seededRandom(3);
  for (let i = 0; i < 50; i++) {
    observe(model, { sessions: 1, rows: 1 + (i % 7), past: Math.floor(random.uniform() * 1000) });
  }
  // A batched run far dearer than its composition moves nothing but its error: the solo fit stands.
  const batch = { sessions: 4, rows: 5, past: 600, pastSum: 2000 };
  model.observe(batch, 100 * truth(batch), copyOf(batch));
  const solo = { sessions: 1, rows: 3, past: 500 };
  for (let i = 0; i < 30; i++) observe(model, { sessions: 1, rows: 1 + (i % 7), past: 10 * i });
  for (let i = 0; i < 30; i++) observe(model, { ...batch, past: 600 + i });
  assert.ok(Math.abs(model.predict(solo)! - truth(solo)) < 1e-3 * truth(solo));
  // The gather: 0.001 ms per gathered position, from the copies the batched runs reported.
  const gathered = model.predict(batch)!;
  const inPlace = model.predict({ ...batch, inPlace: true })!;
  assert.ok(Math.abs(gathered - inPlace - GATHER * 2000) < 1e-3, `${gathered} − ${inPlace}`);
});
