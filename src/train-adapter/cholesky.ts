/** Dense symmetric positive-definite solves in float64: A·X = B via A = L·Lᵀ. */
import { HatError } from '../errors.ts';

/** In place: the lower triangle of `a` [n, n] becomes L (the upper triangle is left as is). */
export function choleskyInPlace(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    const rowJ = j * n;
    let diagonal = a[rowJ + j];
    for (let k = 0; k < j; k++) diagonal -= a[rowJ + k] * a[rowJ + k];
    if (!(diagonal > 0)) {
      throw new HatError('BAD_OPTION', `the regression's normal matrix is not positive definite (pivot ${j} is ${diagonal})`,
        'raise the ridge strength or feed more varied data');
    }
    const pivot = Math.sqrt(diagonal);
    a[rowJ + j] = pivot;
    for (let i = j + 1; i < n; i++) {
      const rowI = i * n;
      let sum = a[rowI + j];
      for (let k = 0; k < j; k++) sum -= a[rowI + k] * a[rowJ + k];
      a[rowI + j] = sum / pivot;
    }
  }
}

/** Solves (L·Lᵀ)·X = B for B [n, columns] in place, L from choleskyInPlace. */
export function choleskySolveInPlace(l: Float64Array, n: number, b: Float64Array, columns: number): void {
  // L·Z = B, row by row: row i of Z = (row i of B − Σ_k<i L[i,k]·row k of Z) / L[i,i].
  for (let i = 0; i < n; i++) {
    const rowI = i * columns;
    for (let k = 0; k < i; k++) {
      const factor = l[i * n + k];
      if (factor === 0) continue;
      const rowK = k * columns;
      for (let c = 0; c < columns; c++) b[rowI + c] -= factor * b[rowK + c];
    }
    const inverse = 1 / l[i * n + i];
    for (let c = 0; c < columns; c++) b[rowI + c] *= inverse;
  }
  // Lᵀ·X = Z, from the last row up: Lᵀ[i,k] = L[k,i].
  for (let i = n - 1; i >= 0; i--) {
    const rowI = i * columns;
    for (let k = i + 1; k < n; k++) {
      const factor = l[k * n + i];
      if (factor === 0) continue;
      const rowK = k * columns;
      for (let c = 0; c < columns; c++) b[rowI + c] -= factor * b[rowK + c];
    }
    const inverse = 1 / l[i * n + i];
    for (let c = 0; c < columns; c++) b[rowI + c] *= inverse;
  }
}
