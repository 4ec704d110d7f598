/**
 * Rotary position embedding in the Llama / Hugging Face "rotate half" layout (dimension i pairs with
 * i + headDim/2), and the [tokens, heads·headDim] ↔ [batch, heads, seq, headDim] reshuffles attention needs.
 * The adapter's ONNX export builds the same rotation, so training and inference agree by construction.
 */

export interface RopeTables {
  /** [tokens, headDim/2] cos and sin of position · θ^(−2i/headDim). */
  cos: Float32Array;
  sin: Float32Array;
  half: number;
}

export function inverseFrequencies(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / theta ** ((2 * i) / headDim);
  return out;
}

export function ropeTables(positions: ArrayLike<number>, headDim: number, theta: number): RopeTables {
  const half = headDim / 2;
  const frequencies = inverseFrequencies(headDim, theta);
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      // Math.fround matches the fp32 product the ONNX graph computes before Cos/Sin.
      const angle = Math.fround(positions[t] * frequencies[i]);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin, half };
}

/**
 * Rotates every head of x [tokens, heads·headDim] in place. `inverse` rotates by −angle, which is the
 * backward pass (the rotation is orthogonal, so its transpose is its inverse).
 */
export function applyRope(x: Float32Array, heads: number, tables: RopeTables, inverse = false): void {
  const { cos, sin, half } = tables;
  const headDim = 2 * half;
  const tokens = x.length / (heads * headDim);
  const sign = inverse ? -1 : 1;
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i],
          s = sign * sin[t * half + i];
        const first = x[base + i],
          second = x[base + half + i];
        x[base + i] = first * c - second * s;
        x[base + half + i] = second * c + first * s;
      }
    }
  }
}

/** [batch·seq, heads·headDim] → [batch, heads, seq, headDim]. */
export function toHeads(x: Float32Array, batch: number, seq: number, heads: number, headDim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < batch; b++)
    for (let s = 0; s < seq; s++)
      for (let h = 0; h < heads; h++) {
        const from = ((b * seq + s) * heads + h) * headDim;
        out.set(x.subarray(from, from + headDim), ((b * heads + h) * seq + s) * headDim);
      }
  return out;
}

/** [batch, heads, seq, headDim] → [batch·seq, heads·headDim]. */
export function fromHeads(x: Float32Array, batch: number, seq: number, heads: number, headDim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++)
      for (let s = 0; s < seq; s++) {
        const from = ((b * heads + h) * seq + s) * headDim;
        out.set(x.subarray(from, from + headDim), ((b * seq + s) * heads + h) * headDim);
      }
  return out;
}
