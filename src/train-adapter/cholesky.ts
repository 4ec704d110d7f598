/** Dense symmetric positive-definite solves in float64: A·X = B via A = L·Lᵀ. */
import { HatError } from '../errors.ts';

/** In place: the lower triangle of `a` [n, n] becomes L (the upper triangle is left as is). */
export function choleskyInPlace(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    const rowJ = j * n;
    const diagonal = a[rowJ + j] - dot(a, rowJ, rowJ, j);
    if (!(diagonal > 0)) {
      throw new HatError(
        'BAD_OPTION',
        `the regression's normal matrix is not positive definite (pivot ${j} is ${diagonal})`,
        'raise the ridge strength or feed more varied data',
      );
    }
    const pivot = Math.sqrt(diagonal);
    a[rowJ + j] = pivot;
    for (let i = j + 1; i < n; i++) {
      const rowI = i * n;
      a[rowI + j] = (a[rowI + j] - dot(a, rowI, rowJ, j)) / pivot;
    }
  }
}

/** Σ_k<length a[x+k]·a[y+k], four partial sums. */
function dot(a: Float64Array, x: number, y: number, length: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0,
    k = 0;
  for (; k + 4 <= length; k += 4) {
    s0 += a[x + k] * a[y + k];
    s1 += a[x + k + 1] * a[y + k + 1];
    s2 += a[x + k + 2] * a[y + k + 2];
    s3 += a[x + k + 3] * a[y + k + 3];
  }
  for (; k < length; k++) s0 += a[x + k] * a[y + k];
  return s0 + s1 + s2 + s3;
}

/** Solves (L·Lᵀ)·X = B for B [n, columns] in place, L from choleskyInPlace. */
export function choleskySolveInPlace(l: Float64Array, n: number, b: Float64Array, columns: number): void {
  // L·Z = B, row by row: row i of Z = (row i of B − Σ_k<i L[i,k]·row k of Z) / L[i,i].
  for (let i = 0; i < n; i++) {
    subtractRows(
      b,
      i,
      columns,
      Array.from({ length: i }, (_, k) => k),
      (k) => l[i * n + k],
    );
    scaleRow(b, i, columns, 1 / l[i * n + i]);
  }
  // Lᵀ·X = Z, from the last row up: Lᵀ[i,k] = L[k,i].
  for (let i = n - 1; i >= 0; i--) {
    subtractRows(
      b,
      i,
      columns,
      Array.from({ length: n - 1 - i }, (_, j) => i + 1 + j),
      (k) => l[k * n + i],
    );
    scaleRow(b, i, columns, 1 / l[i * n + i]);
  }
}

function scaleRow(b: Float64Array, row: number, columns: number, factor: number): void {
  for (let c = row * columns, end = c + columns; c < end; c++) b[c] *= factor;
}

/**
 * row `target` of b −= Σ_k factor(k)·row k, four source rows per pass so the target row is read and written
 * once per four (the solve is memory-bound; this is ~3× faster than one row at a time).
 */
function subtractRows(
  b: Float64Array,
  target: number,
  columns: number,
  sources: number[],
  factor: (k: number) => number,
): void {
  const out = target * columns;
  let index = 0;
  for (; index + 4 <= sources.length; index += 4) {
    const r0 = sources[index] * columns,
      r1 = sources[index + 1] * columns,
      r2 = sources[index + 2] * columns,
      r3 = sources[index + 3] * columns;
    const f0 = factor(sources[index]),
      f1 = factor(sources[index + 1]),
      f2 = factor(sources[index + 2]),
      f3 = factor(sources[index + 3]);
    for (let c = 0; c < columns; c++) b[out + c] -= f0 * b[r0 + c] + f1 * b[r1 + c] + f2 * b[r2 + c] + f3 * b[r3 + c];
  }
  for (; index < sources.length; index++) {
    const source = sources[index] * columns,
      f = factor(sources[index]);
    for (let c = 0; c < columns; c++) b[out + c] -= f * b[source + c];
  }
}
