import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsMatMul, transpose, type MatMulShape } from '../../src/train-adapter/matmul.ts';
import { createOrtMatMul } from '../../src/train-adapter/matmul-ort.ts';
import { normalArray, seededRandom } from '../../src/random.ts';

/** The definition, in doubles. */
function reference(a: Float32Array, b: Float32Array, shape: MatMulShape): Float64Array {
  const { m, k, n } = shape;
  const batch = shape.batch ?? 1;
  const c = new Float64Array(batch * m * n);
  for (let p = 0; p < batch; p++) {
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let t = 0; t < k; t++) {
          const av = shape.transA ? a[p * m * k + t * m + i] : a[p * m * k + i * k + t];
          const bv = shape.transB ? b[p * k * n + j * k + t] : b[p * k * n + t * n + j];
          sum += av * bv;
        }
        c[p * m * n + i * n + j] = sum;
      }
  }
  return c;
}

function maxError(actual: Float32Array, expected: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  return worst;
}

const shapes: MatMulShape[] = [];
for (const transA of [false, true])
  for (const transB of [false, true]) {
    shapes.push({ m: 7, k: 5, n: 3, transA, transB });
    shapes.push({ batch: 3, m: 33, k: 70, n: 41, transA, transB });
  }

test('JS and onnxruntime matmuls match the definition for every transpose variant and batching', async () => {
  const random = seededRandom(1);
  const ort = await createOrtMatMul({ threads: 1 });
  try {
    for (const shape of shapes) {
      const batch = shape.batch ?? 1;
      const a = normalArray(random, batch * shape.m * shape.k, 1);
      const b = normalArray(random, batch * shape.k * shape.n, 1);
      const expected = reference(a, b, shape);
      for (const engine of [jsMatMul, ort]) {
        const c = await engine.matmul(a, b, shape);
        assert.equal(c.length, batch * shape.m * shape.n);
        assert.ok(
          maxError(c, expected) < 1e-4,
          `${engine.name} ${JSON.stringify(shape)}: error ${maxError(c, expected)}`,
        );
      }
    }
  } finally {
    await ort.release();
  }
});

test('transpose swaps rows and columns', () => {
  assert.deepEqual([...transpose(new Float32Array([1, 2, 3, 4, 5, 6]), 2, 3)], [1, 4, 2, 5, 3, 6]);
});
