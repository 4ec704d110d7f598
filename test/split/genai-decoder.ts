/**
 * A tiny decoder in the onnxruntime-genai model-builder layout, built in code (torch cannot emit contrib ops):
 * int32 input_ids and attention_mask, NO position_ids, GroupQueryAttention (com.microsoft) with rotary inside
 * (do_rotary, cos/sin caches), SimplifiedLayerNormalization then SkipSimplifiedLayerNormalization residual norms,
 * SwiGLU, fp32. Like the builder, the attention prelude turns attention_mask into GQA's seqlens_k
 * (ReduceSum − 1, int32) and total_sequence_length (int32 scalar), and positions come from the cache length.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GraphBuilder, float } from '../../src/onnx/graph-builder.ts';
import { saveModel, type ModelProto } from '../../src/onnx/model-io.ts';
import { normalArray, seededRandom } from '../../src/random.ts';

export interface GenaiDecoderConfig {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  ffn: number;
  maxPositions: number;
  seed: number;
}

// onnxruntime's CPU GroupQueryAttention needs a head size that is a multiple of 16.
export const GENAI_TINY: GenaiDecoderConfig = {
  layers: 4,
  hidden: 64,
  heads: 4,
  kvHeads: 2,
  vocab: 96,
  ffn: 96,
  maxPositions: 128,
  seed: 21,
};

const [INT32, INT64] = [6, 7]; // onnx TensorProto.DataType

export function buildGenaiDecoder(c: GenaiDecoderConfig = GENAI_TINY): ModelProto {
  const headDim = c.hidden / c.heads;
  const random = seededRandom(c.seed);
  const b = new GraphBuilder('genai-tiny', { opset: 17, extraOpsets: { 'com.microsoft': 1 } });
  const weight = (name: string, dims: number[], std = 1 / Math.sqrt(dims[0])) =>
    b.initializer(name, normalArray(random, dims[0] * (dims[1] ?? 1), std), dims);
  const gamma = (name: string) =>
    b.initializer(
      name,
      normalArray(random, c.hidden, 0.1).map((v) => 1 + v),
      [c.hidden],
    );
  const matmul = (x: string, name: string, dims: number[], node: string) =>
    b.op('MatMul', [x, weight(name, dims)], { name: node });

  const ids = b.input('input_ids', 'int32', ['batch_size', 'sequence_length']);
  const mask = b.input('attention_mask', 'int32', ['batch_size', 'total_sequence_length']);
  const kvDims = (length: string) => ['batch_size', c.kvHeads, length, headDim];
  const past = Array.from({ length: c.layers }, (_, l) =>
    ['key', 'value'].map((kind) => b.input(`past_key_values.${l}.${kind}`, 'float32', kvDims('past_sequence_length'))),
  );

  // attn_mask_reformat: seqlens_k = sum(mask) − 1 per row, total_sequence_length = mask.shape[1], both int32.
  const m = '/model/attn_mask_reformat/attn_mask_subgraph';
  const rowSum = b.op('ReduceSum', [mask, b.int64([1])], { name: `${m}/ReduceSum`, attributes: { keepdims: 0 } });
  const sum = b.op('Cast', [rowSum], { name: `${m}/ReduceSum/Cast`, attributes: { to: INT64 } });
  const lastIndex = b.op('Sub', [sum, b.int64([1], [])], { name: `${m}/Sub` });
  const seqlensK = b.op('Cast', [lastIndex], { name: `${m}/Sub/Cast`, attributes: { to: INT32 } });
  const shape = b.op('Shape', [mask], { name: `${m}/Shape` });
  const length = b.op('Gather', [shape, b.int64([1], [])], { name: `${m}/Gather` });
  const total = b.op('Cast', [length], { name: `${m}/Gather/Cast`, attributes: { to: INT32 } });

  const half = headDim / 2;
  const angles = (f: (x: number) => number) =>
    Float32Array.from({ length: c.maxPositions * half }, (_, i) =>
      f(Math.floor(i / half) / 10000 ** ((2 * (i % half)) / headDim)),
    );
  const cos = b.initializer('cos_cache', angles(Math.cos), [c.maxPositions, half]);
  const sin = b.initializer('sin_cache', angles(Math.sin), [c.maxPositions, half]);

  const embedding = weight('model.embed_tokens.weight', [c.vocab, c.hidden], 1);
  let x = b.op('Gather', [embedding, ids], { name: '/model/embed_tokens/Gather' });
  let normed = b.op('SimplifiedLayerNormalization', [x, gamma('model.layers.0.input_layernorm.weight')], {
    name: '/model/layers.0/input_layernorm/LayerNorm',
    attributes: { axis: -1, epsilon: float(1e-5) },
  });
  const skipNorm = (name: string, input: string, skip: string, g: string): [string, string] => {
    const [out, , , residual] = b.node('SkipSimplifiedLayerNormalization', [input, skip, g], {
      name,
      domain: 'com.microsoft',
      attributes: { epsilon: float(1e-5) },
      outputs: 4,
    });
    return [out, residual];
  };
  let pending: string | undefined;
  for (let l = 0; l < c.layers; l++) {
    const p = `/model/layers.${l}`;
    const w = `model.layers.${l}`;
    if (pending) {
      [normed, x] = skipNorm(`${p}/input_layernorm/SkipLayerNorm`, pending, x, gamma(`${w}.input_layernorm.weight`));
    }
    const proj = (name: string, heads: number) =>
      matmul(normed, `${w}.self_attn.${name}.weight`, [c.hidden, heads * headDim], `${p}/attn/${name}/MatMul`);
    const [attention] = b.node(
      'GroupQueryAttention',
      [
        proj('q_proj', c.heads),
        proj('k_proj', c.kvHeads),
        proj('v_proj', c.kvHeads),
        past[l][0],
        past[l][1],
        seqlensK,
        total,
        cos,
        sin,
      ],
      {
        name: `${p}/attn/GroupQueryAttention`,
        domain: 'com.microsoft',
        attributes: {
          num_heads: c.heads,
          kv_num_heads: c.kvHeads,
          do_rotary: 1,
          rotary_interleaved: 0,
          scale: float(1 / Math.sqrt(headDim)),
        },
        outputs: [`${p}/attn/GroupQueryAttention/output_0`, `present.${l}.key`, `present.${l}.value`],
      },
    );
    const out = matmul(
      attention,
      `${w}.self_attn.o_proj.weight`,
      [c.heads * headDim, c.hidden],
      `${p}/attn/o_proj/MatMul`,
    );
    let mlpIn: string;
    const postGamma = gamma(`${w}.post_attention_layernorm.weight`);
    [mlpIn, x] = skipNorm(`${p}/post_attention_layernorm/SkipLayerNorm`, out, x, postGamma);
    const gate = matmul(mlpIn, `${w}.mlp.gate_proj.weight`, [c.hidden, c.ffn], `${p}/mlp/gate_proj/MatMul`);
    const up = matmul(mlpIn, `${w}.mlp.up_proj.weight`, [c.hidden, c.ffn], `${p}/mlp/up_proj/MatMul`);
    const sigmoid = b.op('Sigmoid', [gate], { name: `${p}/mlp/act_fn/Sigmoid` });
    const silu = b.op('Mul', [gate, sigmoid], { name: `${p}/mlp/act_fn/Mul` });
    const product = b.op('Mul', [silu, up], { name: `${p}/mlp/Mul` });
    pending = matmul(product, `${w}.mlp.down_proj.weight`, [c.ffn, c.hidden], `${p}/mlp/down_proj/MatMul`);
  }
  const finalGamma = gamma('model.norm.weight');
  const [final] = skipNorm('/model/layers.final/final_norm_layernorm/SkipLayerNorm', pending!, x, finalGamma);
  const logits = matmul(final, 'lm_head.weight', [c.hidden, c.vocab], '/lm_head/MatMul');
  b.output(logits, 'float32', ['batch_size', 'sequence_length', c.vocab], 'logits');
  for (let l = 0; l < c.layers; l++) {
    for (const kind of ['key', 'value']) b.output(`present.${l}.${kind}`, 'float32', kvDims('total_sequence_length'));
  }
  const model = b.build('onnxruntime-genai model-builder layout (test builder)');
  // As the builder does, leave the Skip norms' mean / inv_std outputs unnamed.
  for (const node of model.graph!.node!) {
    if (node.opType === 'SkipSimplifiedLayerNormalization') node.output = [node.output![0], '', '', node.output![3]];
  }
  return model;
}

/** Writes model.onnx (weights inline) and config.json (Hugging Face field names) into `dir`; returns the model path. */
export async function writeGenaiDecoder(dir: string, c: GenaiDecoderConfig = GENAI_TINY): Promise<string> {
  const path = join(dir, 'model.onnx');
  await saveModel(buildGenaiDecoder(c), path);
  const config = {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    vocab_size: c.vocab,
    hidden_size: c.hidden,
    intermediate_size: c.ffn,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    rms_norm_eps: 1e-5,
    max_position_embeddings: c.maxPositions,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return path;
}
