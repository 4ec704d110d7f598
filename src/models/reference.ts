/**
 * A plain TypeScript forward pass of the Llama decoder, written straight from the math with no ONNX and no
 * cache: the independent check that the ONNX graph (and any later split of it) computes the right thing.
 * O(S²·layers) loops over Float32Arrays — for small configurations only.
 */
import type { LlamaConfig } from './config.ts';
import type { WeightMap } from './weights.ts';

/** out[o] = Σ_i v[i]·W[i, o] (+ bias[o]) with W stored [in, out]. */
function project(v: Float32Array, w: Float32Array, outSize: number, bias?: Float32Array): Float32Array {
  const out = bias ? Float32Array.from(bias) : new Float32Array(outSize);
  for (let i = 0; i < v.length; i++) {
    const vi = v[i];
    const row = i * outSize;
    for (let o = 0; o < outSize; o++) out[o] += vi * w[row + o];
  }
  return out;
}

function rmsNorm(v: Float32Array, gamma: Float32Array, eps: number): Float32Array {
  let sum = 0;
  for (const value of v) sum += value * value;
  const scale = 1 / Math.sqrt(sum / v.length + eps);
  return v.map((value, i) => value * scale * gamma[i]);
}

/** Rotate-half RoPE on every head of `v` ([heads·headDim]) at absolute position `position`, in place. */
function applyRotary(v: Float32Array, heads: number, headDim: number, position: number, theta: number): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = position / theta ** ((2 * i) / headDim);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const x1 = v[base + i];
      const x2 = v[base + i + half];
      v[base + i] = x1 * cos - x2 * sin;
      v[base + i + half] = x2 * cos + x1 * sin;
    }
  }
}

const silu = (x: number) => x / (1 + Math.exp(-x));

/** Logits [ids.length, vocab] for a sequence at positions 0..n−1 with causal attention. */
export function referenceForward(c: LlamaConfig, weights: WeightMap, ids: readonly number[]): Float32Array {
  const w = (name: string) => weights.get(name)!;
  const hidden = c.hiddenSize;
  const kvSize = c.kvHeads * c.headDim;
  const groups = c.heads / c.kvHeads;
  const embedding = w('model.embed_tokens.weight');
  let x = ids.map((id) => embedding.slice(id * hidden, (id + 1) * hidden));

  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    const bias = (name: string) => (c.attentionBias ? w(`${p}.self_attn.${name}.bias`) : undefined);
    const normed = x.map((v) => rmsNorm(v, w(`${p}.input_layernorm.weight`), c.rmsNormEps));
    const q = normed.map((v, s) => {
      const out = project(v, w(`${p}.self_attn.q_proj.weight`), c.heads * c.headDim, bias('q_proj'));
      applyRotary(out, c.heads, c.headDim, s, c.ropeTheta);
      return out;
    });
    const k = normed.map((v, s) => {
      const out = project(v, w(`${p}.self_attn.k_proj.weight`), kvSize, bias('k_proj'));
      applyRotary(out, c.kvHeads, c.headDim, s, c.ropeTheta);
      return out;
    });
    const values = normed.map((v) => project(v, w(`${p}.self_attn.v_proj.weight`), kvSize, bias('v_proj')));

    x = x.map((residual, s) => {
      const context = new Float32Array(c.heads * c.headDim);
      for (let h = 0; h < c.heads; h++) {
        const kvBase = Math.floor(h / groups) * c.headDim;
        const scores = new Float64Array(s + 1);
        for (let j = 0; j <= s; j++) {
          let dot = 0;
          for (let d = 0; d < c.headDim; d++) dot += q[s][h * c.headDim + d] * k[j][kvBase + d];
          scores[j] = dot / Math.sqrt(c.headDim);
        }
        const max = Math.max(...scores);
        let total = 0;
        for (let j = 0; j <= s; j++) {
          scores[j] = Math.exp(scores[j] - max);
          total += scores[j];
        }
        for (let j = 0; j <= s; j++) {
          for (let d = 0; d < c.headDim; d++) context[h * c.headDim + d] += (scores[j] / total) * values[j][kvBase + d];
        }
      }
      const attention = project(context, w(`${p}.self_attn.o_proj.weight`), hidden);
      const afterAttention = residual.map((r, i) => r + attention[i]);
      const h2 = rmsNorm(afterAttention, w(`${p}.post_attention_layernorm.weight`), c.rmsNormEps);
      const gate = project(h2, w(`${p}.mlp.gate_proj.weight`), c.intermediateSize);
      const up = project(h2, w(`${p}.mlp.up_proj.weight`), c.intermediateSize);
      const mlp = project(
        gate.map((g, i) => silu(g) * up[i]),
        w(`${p}.mlp.down_proj.weight`),
        hidden,
      );
      return afterAttention.map((r, i) => r + mlp[i]);
    });
  }

  const logits = new Float32Array(ids.length * c.vocabSize);
  x.forEach((v, s) => {
    const normed = rmsNorm(v, w('model.norm.weight'), c.rmsNormEps);
    const row = c.tiedEmbeddings
      ? tiedHead(normed, embedding, c.vocabSize)
      : project(normed, w('lm_head.weight'), c.vocabSize);
    logits.set(row, s * c.vocabSize);
  });
  return logits;
}

/** logits[t] = embedding[t] · v (the embedding is [vocab, hidden], i.e. already the transposed head). */
function tiedHead(v: Float32Array, embedding: Float32Array, vocab: number): Float32Array {
  const out = new Float32Array(vocab);
  for (let t = 0; t < vocab; t++) {
    let dot = 0;
    for (let i = 0; i < v.length; i++) dot += embedding[t * v.length + i] * v[i];
    out[t] = dot;
  }
  return out;
}
