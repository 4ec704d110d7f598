import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import { choleskyInPlace, choleskySolveInPlace } from '../../src/train-adapter/cholesky.ts';
import { fitLinearAdapter, linearForward, RidgeAccumulator } from '../../src/train-adapter/linear-adapter.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import { arraySource, type PairBatch } from '../../src/train-adapter/pair-source.ts';
import { normalArray, seededRandom } from '../../src/random.ts';

test('Cholesky solves a symmetric positive-definite system and rejects an indefinite one', () => {
  const random = seededRandom(3);
  const n = 9,
    columns = 4;
  const m = normalArray(random, n * n, 1);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      for (let k = 0; k < n; k++) a[i * n + j] += m[i * n + k] * m[j * n + k];
      if (i === j) a[i * n + j] += 0.1;
    }
  const x = Float64Array.from(normalArray(random, n * columns, 1));
  const b = new Float64Array(n * columns);
  for (let i = 0; i < n; i++)
    for (let c = 0; c < columns; c++)
      for (let k = 0; k < n; k++) b[i * columns + c] += a[i * n + k] * x[k * columns + c];
  const l = a.slice();
  choleskyInPlace(l, n);
  choleskySolveInPlace(l, n, b, columns);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(b[i] - x[i]) < 1e-8);
  assert.throws(
    () => choleskyInPlace(new Float64Array([1, 2, 2, 1]), 2),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
});

function linearProblem(seed: number, hidden: number, batches: number, rows: number) {
  const random = seededRandom(seed);
  const weight = normalArray(random, hidden * hidden, 1 / Math.sqrt(hidden));
  const bias = normalArray(random, hidden, 1);
  // Large per-dimension offsets, as in real hidden states.
  const offset = Float32Array.from({ length: hidden }, (_, i) => (i % 5 === 0 ? 80 : 2));
  const out: PairBatch[] = [];
  for (let b = 0; b < batches; b++) {
    const x = Float32Array.from(normalArray(random, rows * hidden, 1), (v, i) => v + offset[i % hidden]);
    const y = new Float32Array(rows * hidden);
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < hidden; j++) {
        let sum = bias[j];
        for (let i = 0; i < hidden; i++) sum += x[r * hidden + i] * weight[i * hidden + j];
        y[r * hidden + j] = sum;
      }
    out.push({
      batch: 1,
      seq: rows,
      hidden: x,
      target: y,
      positions: new Int32Array(rows),
      targetTokens: new Int32Array(rows),
    });
  }
  return { weight, bias, batches: out };
}

test('ridge regression recovers an exact linear map from streamed batches with large offsets', async () => {
  const problem = linearProblem(1, 12, 5, 20);
  const adapter = await fitLinearAdapter(arraySource(problem.batches, 12), { ridge: 1e-9 });
  for (let i = 0; i < problem.weight.length; i++)
    assert.ok(Math.abs(adapter.weight[i] - problem.weight[i]) < 1e-3, `W[${i}]`);
  for (let j = 0; j < 12; j++)
    assert.ok(Math.abs(adapter.bias[j] - problem.bias[j]) < 2e-2, `b[${j}] ${adapter.bias[j]} vs ${problem.bias[j]}`);
  const predicted = await linearForward(adapter, problem.batches[0].hidden);
  for (let i = 0; i < predicted.length; i++) assert.ok(Math.abs(predicted[i] - problem.batches[0].target[i]) < 1e-2);
});

test('the solve is deterministic and the same whether data arrive in one batch or many', async () => {
  const problem = linearProblem(2, 8, 4, 10);
  const streamed = new RidgeAccumulator(8, jsMatMul);
  for (const batch of problem.batches) await streamed.add(batch.hidden, batch.target);
  const joined = new RidgeAccumulator(8, jsMatMul);
  const concat = (key: 'hidden' | 'target') => Float32Array.from(problem.batches.flatMap((b) => [...b[key]]));
  await joined.add(concat('hidden'), concat('target'));
  const a = streamed.solve(1e-2),
    b = joined.solve(1e-2),
    again = streamed.solve(1e-2);
  assert.deepEqual(again.weight, a.weight);
  for (let i = 0; i < a.weight.length; i++) assert.ok(Math.abs(a.weight[i] - b.weight[i]) < 1e-4);
  assert.equal(streamed.rows, 40);
});

test('no data is a HatError', () => {
  assert.throws(
    () => new RidgeAccumulator(4).solve(),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
});
