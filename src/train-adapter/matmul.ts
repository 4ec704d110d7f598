/**
 * Matrix products, the only heavy arithmetic of adapter training. Everything goes through a MatMulEngine so the
 * training code is the same whether the products run in plain JS (the reference, ~2 GFLOP/s) or in
 * onnxruntime's MLAS kernels (matmul-ort.ts, ~60× faster on one core: the default for real training).
 * All matrices are row-major Float32Array.
 */
import { HatError } from '../errors.ts';

export interface MatMulShape {
  /** Independent products stacked along the first axis (default 1). */
  batch?: number;
  m: number;
  k: number;
  n: number;
  /** A is stored [k, m] and used transposed. */
  transA?: boolean;
  /** B is stored [n, k] and used transposed. */
  transB?: boolean;
}

export interface MatMulEngine {
  readonly name: string;
  /** C[b] = op(A[b]) · op(B[b]) for each b: a new [batch, m, n] array. */
  matmul(a: Float32Array, b: Float32Array, shape: MatMulShape): Promise<Float32Array>;
  release(): Promise<void>;
}

export function checkShape(a: Float32Array, b: Float32Array, shape: MatMulShape): number {
  const batch = shape.batch ?? 1;
  const { m, k, n } = shape;
  if (a.length !== batch * m * k || b.length !== batch * k * n) {
    throw new HatError(
      'INTERNAL',
      `matmul operands of ${a.length} and ${b.length} elements do not fit ${JSON.stringify(shape)}`,
    );
  }
  return batch;
}

export const jsMatMul: MatMulEngine = {
  name: 'js',
  async matmul(a, b, shape) {
    return matmulSync(a, b, shape);
  },
  async release() {},
};

export function matmulSync(a: Float32Array, b: Float32Array, shape: MatMulShape): Float32Array {
  const batch = checkShape(a, b, shape);
  const { m, k, n } = shape;
  const c = new Float32Array(batch * m * n);
  for (let index = 0; index < batch; index++) {
    const aBlock = a.subarray(index * m * k, (index + 1) * m * k);
    const bBlock = b.subarray(index * k * n, (index + 1) * k * n);
    const cBlock = c.subarray(index * m * n, (index + 1) * m * n);
    if (shape.transA && shape.transB) multiplyTransB(transpose(aBlock, k, m), bBlock, cBlock, m, k, n);
    else if (shape.transA) multiplyTransA(aBlock, bBlock, cBlock, m, k, n);
    else if (shape.transB) multiplyTransB(aBlock, bBlock, cBlock, m, k, n);
    else multiply(aBlock, bBlock, cBlock, m, k, n);
  }
  return c;
}

/** [rows, cols] → [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j];
  return out;
}

// Blocking k keeps a slab of B in cache while four rows of C are updated from it; four rows per pass share
// each load of B. Together ~2× a naive triple loop in V8.
const K_BLOCK = 64;

/** C += A[m,k] · B[k,n]. */
function multiply(a: Float32Array, b: Float32Array, c: Float32Array, m: number, k: number, n: number): void {
  for (let k0 = 0; k0 < k; k0 += K_BLOCK) {
    const k1 = Math.min(k, k0 + K_BLOCK);
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const c0 = i * n,
        c1 = c0 + n,
        c2 = c1 + n,
        c3 = c2 + n;
      for (let t = k0; t < k1; t++) {
        const a0 = a[i * k + t],
          a1 = a[(i + 1) * k + t],
          a2 = a[(i + 2) * k + t],
          a3 = a[(i + 3) * k + t];
        const row = t * n;
        for (let j = 0; j < n; j++) {
          const value = b[row + j];
          c[c0 + j] += a0 * value;
          c[c1 + j] += a1 * value;
          c[c2 + j] += a2 * value;
          c[c3 + j] += a3 * value;
        }
      }
    }
    for (; i < m; i++) {
      for (let t = k0; t < k1; t++) {
        const scale = a[i * k + t],
          row = t * n,
          out = i * n;
        for (let j = 0; j < n; j++) c[out + j] += scale * b[row + j];
      }
    }
  }
}

/** C += A[k,m]ᵀ · B[k,n]: each row t of A scatters into the rows of C. */
function multiplyTransA(a: Float32Array, b: Float32Array, c: Float32Array, m: number, k: number, n: number): void {
  for (let t = 0; t < k; t++) {
    const row = t * n;
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const a0 = a[t * m + i],
        a1 = a[t * m + i + 1],
        a2 = a[t * m + i + 2],
        a3 = a[t * m + i + 3];
      const c0 = i * n,
        c1 = c0 + n,
        c2 = c1 + n,
        c3 = c2 + n;
      for (let j = 0; j < n; j++) {
        const value = b[row + j];
        c[c0 + j] += a0 * value;
        c[c1 + j] += a1 * value;
        c[c2 + j] += a2 * value;
        c[c3 + j] += a3 * value;
      }
    }
    for (; i < m; i++) {
      const scale = a[t * m + i],
        out = i * n;
      for (let j = 0; j < n; j++) c[out + j] += scale * b[row + j];
    }
  }
}

/** C = A[m,k] · B[n,k]ᵀ: row-by-row dot products, four partial sums for instruction-level parallelism. */
function multiplyTransB(a: Float32Array, b: Float32Array, c: Float32Array, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) {
    const rowA = i * k;
    for (let j = 0; j < n; j++) {
      const rowB = j * k;
      let s0 = 0,
        s1 = 0,
        s2 = 0,
        s3 = 0,
        t = 0;
      for (; t + 4 <= k; t += 4) {
        s0 += a[rowA + t] * b[rowB + t];
        s1 += a[rowA + t + 1] * b[rowB + t + 1];
        s2 += a[rowA + t + 2] * b[rowB + t + 2];
        s3 += a[rowA + t + 3] * b[rowB + t + 3];
      }
      for (; t < k; t++) s0 += a[rowA + t] * b[rowB + t];
      c[i * n + j] = s0 + s1 + s2 + s3;
    }
  }
}
