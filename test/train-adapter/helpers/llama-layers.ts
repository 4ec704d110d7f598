/**
 * A Llama decoder as a stack of adapter-shaped attention blocks plus SwiGLU MLPs, for tests and experiments:
 * it yields the hidden state after any layer (what the split parts will give the real command), and checking
 * it against a trained model's golden tokens proves the adapter's RoPE, GQA and weight layout match the
 * model's — which initialising the adapter from a model layer relies on.
 */
import type { LlamaConfig } from '../../../src/models/config.ts';
import type { WeightMap } from '../../../src/models/weights.ts';
import {
  adapterForward,
  type AttentionAdapterConfig,
  type SequenceBatch,
} from '../../../src/train-adapter/attention-adapter.ts';
import { layerAttentionInit } from '../../../src/train-adapter/init-from-model.ts';
import { transpose, type MatMulEngine } from '../../../src/train-adapter/matmul.ts';
import type { OutputHead } from '../../../src/train-adapter/output-head.ts';
import { rmsNorm } from '../../../src/train-adapter/rmsnorm.ts';

export function attentionConfigOf(model: LlamaConfig): AttentionAdapterConfig {
  return {
    hidden: model.hiddenSize,
    heads: model.heads,
    kvHeads: model.kvHeads,
    headDim: model.headDim,
    ropeTheta: model.ropeTheta,
    normEps: model.rmsNormEps,
  };
}

export function headOf(model: LlamaConfig, weights: WeightMap): OutputHead {
  return {
    normWeight: weights.get('model.norm.weight')!,
    eps: model.rmsNormEps,
    vocab: model.vocabSize,
    lmHead: model.tiedEmbeddings
      ? transpose(weights.get('model.embed_tokens.weight')!, model.vocabSize, model.hiddenSize)
      : weights.get('lm_head.weight')!,
  };
}

export function embed(model: LlamaConfig, weights: WeightMap, ids: number[][]): SequenceBatch {
  const d = model.hiddenSize,
    table = weights.get('model.embed_tokens.weight')!;
  const seq = ids[0].length;
  const hidden = new Float32Array(ids.length * seq * d);
  ids.flat().forEach((id, row) => hidden.set(table.subarray(id * d, (id + 1) * d), row * d));
  return {
    batch: ids.length,
    seq,
    hidden,
    positions: Int32Array.from({ length: ids.length * seq }, (_, i) => i % seq),
  };
}

/** Hidden states after layers [from, to) for a batch of equal-length sequences. */
export async function runLayers(
  model: LlamaConfig,
  weights: WeightMap,
  input: SequenceBatch,
  from: number,
  to: number,
  engine: MatMulEngine,
): Promise<Float32Array> {
  const w = (name: string) => weights.get(name)!;
  const d = model.hiddenSize,
    ff = model.intermediateSize,
    tokens = input.batch * input.seq;
  let x = input.hidden;
  for (let l = from; l < to; l++) {
    const attention = layerAttentionInit((name) => weights.get(name), l);
    const afterAttention = (await adapterForward(attention, attentionConfigOf(model), { ...input, hidden: x }, engine))
      .output;
    const normed = rmsNorm(
      afterAttention,
      w(`model.layers.${l}.post_attention_layernorm.weight`),
      model.rmsNormEps,
    ).out;
    const [gate, up] = await Promise.all([
      engine.matmul(normed, w(`model.layers.${l}.mlp.gate_proj.weight`), { m: tokens, k: d, n: ff }),
      engine.matmul(normed, w(`model.layers.${l}.mlp.up_proj.weight`), { m: tokens, k: d, n: ff }),
    ]);
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const down = await engine.matmul(gate, w(`model.layers.${l}.mlp.down_proj.weight`), { m: tokens, k: ff, n: d });
    for (let i = 0; i < down.length; i++) down[i] += afterAttention[i];
    x = down;
  }
  return x;
}
