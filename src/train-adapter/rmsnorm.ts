/** RMSNorm over the last axis, y = x / rms(x) · g, with its backward pass (shared by the adapter and the head). */

export interface RmsNormResult {
  out: Float32Array;
  /** 1 / sqrt(mean(x²) + eps) per row, kept for the backward pass. */
  inverseRms: Float32Array;
}

export function rmsNorm(x: Float32Array, weight: Float32Array, eps: number): RmsNormResult {
  const width = weight.length;
  const rows = x.length / width;
  const out = new Float32Array(x.length);
  const inverseRms = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    let sumSquares = 0;
    for (let i = 0; i < width; i++) sumSquares += x[base + i] * x[base + i];
    const inv = 1 / Math.sqrt(sumSquares / width + eps);
    inverseRms[r] = inv;
    for (let i = 0; i < width; i++) out[base + i] = x[base + i] * inv * weight[i];
  }
  return { out, inverseRms };
}

/**
 * Given dL/dy, returns dL/dx and adds dL/dg into `weightGrad` when one is passed (a frozen norm passes none):
 *   dx_i = r·g_i·dy_i − x_i · r³/d · Σ_j g_j·dy_j·x_j,   dg_i = Σ_rows dy_i·x_i·r.
 */
export function rmsNormBackward(
  x: Float32Array,
  weight: Float32Array,
  inverseRms: Float32Array,
  dOut: Float32Array,
  weightGrad?: Float32Array,
): Float32Array {
  const width = weight.length;
  const rows = x.length / width;
  const dx = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    const inv = inverseRms[r];
    let dot = 0;
    for (let i = 0; i < width; i++) dot += weight[i] * dOut[base + i] * x[base + i];
    const correction = (inv * inv * inv * dot) / width;
    for (let i = 0; i < width; i++) dx[base + i] = inv * weight[i] * dOut[base + i] - x[base + i] * correction;
    if (weightGrad) for (let i = 0; i < width; i++) weightGrad[i] += dOut[base + i] * x[base + i] * inv;
  }
  return dx;
}
