/**
 * Writes a Llama-family decoder as ONNX in the Hugging Face Optimum layout:
 *   input_ids [B,S], attention_mask [B,past+S], position_ids [B,S],
 *   past_key_values.N.key/value [B,kvHeads,past,headDim]
 *   → logits [B,S,vocab], present.N.key/value [B,kvHeads,past+S,headDim]
 * with standard ai.onnx opset-17 ops only (RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU).
 *
 * Every shape is computed at run time from the inputs (nothing traced), so any sequence length works on any
 * past length — including the multi-token steps on a non-empty cache that speculative verification needs.
 * The causal mask compares key index j with query index past+i and drops keys whose attention_mask is 0.
 * GQA never copies the cache: queries are regrouped to [B, kvHeads, groups·S, headDim] and multiplied with
 * the un-expanded keys/values.
 *
 * Norms and softmax run in fp32 (cast in and out for fp16 models, as Hugging Face does); matmuls run in the
 * model's dtype.
 */
import { basename, dirname, join } from 'node:path';
import { renameSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { ExternalDataWriter, encodeModel } from '../onnx/model-io.ts';
import {
  GraphBuilder,
  externalWeights,
  inlineWeights,
  onnxElementType,
  type FloatType,
} from '../onnx/graph-builder.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { weightSpecs, type LlamaConfig, type WeightSpec } from './config.ts';
import type { WeightSource } from './weights.ts';

const FLOAT = onnxElementType('float32');
const BOOL = onnxElementType('bool');
/** Added to masked scores before softmax; finite so a fully masked (padding) row gives no NaN. */
const MASKED_SCORE = -1e9;

export interface BuildLlamaOptions {
  dtype?: FloatType;
  /** Put weights in `<model>_data` beside the model. 'auto' does so above 256 MiB of weights. */
  externalData?: boolean | 'auto';
  reporter?: Reporter;
}

export const EXTERNAL_DATA_AUTO_BYTES = 256 * 1024 * 1024;

export interface BuiltModel {
  modelPath: string;
  dataPath?: string;
  weightBytes: number;
}

export const formatBytes = (bytes: number) =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export function weightBytes(config: LlamaConfig, dtype: FloatType): number {
  const perElement = dtype === 'float16' ? 2 : 4;
  return weightSpecs(config).reduce((sum, s) => sum + s.dims.reduce((a, b) => a * b, 1) * perElement, 0);
}

/** Writes `modelPath` (and its external-data file), streaming weights from `source` one tensor chunk at a time. */
export async function writeLlamaOnnx(
  config: LlamaConfig,
  source: WeightSource,
  modelPath: string,
  options: BuildLlamaOptions = {},
): Promise<BuiltModel> {
  const dtype = options.dtype ?? 'float32';
  const total = weightBytes(config, dtype);
  const external =
    options.externalData === 'auto' || options.externalData === undefined
      ? total > EXTERNAL_DATA_AUTO_BYTES
      : options.externalData;
  const dataName = `${basename(modelPath)}_data`;
  const dataPath = join(dirname(modelPath), dataName);
  // Both files are written under temporary names and renamed in only once both are complete, so a failure never
  // leaves a data file that looks complete, nor a new data file beside an old model.onnx.
  const writer = external ? new ExternalDataWriter(`${dataPath}.partial`, dataName) : undefined;
  const partialModel = `${modelPath}.partial`;
  const progress = (options.reporter ?? silentReporter).progress(`writing ${formatBytes(total)} of ${dtype} weights`);
  let written = 0;
  const tracked: WeightSource = function* (spec) {
    for (const chunk of source(spec)) {
      yield chunk;
      written += chunk.length * (dtype === 'float16' ? 2 : 4);
      progress.update(`writing weights: ${spec.name}`, written / total);
    }
  };
  try {
    const builder = new GraphBuilder('llama', { weights: writer ? externalWeights(writer) : inlineWeights });
    buildLlamaGraph(builder, config, tracked, dtype);
    writer?.close();
    const description =
      `Llama-family decoder written by hat ` + `(${config.layers} layers, hidden ${config.hiddenSize}, ${dtype})`;
    await writeFile(partialModel, encodeModel(builder.build(description)));
    if (writer) renameSync(writer.path, dataPath);
    renameSync(partialModel, modelPath);
    // The file name only: callers may write into a staging folder that is renamed afterwards.
    progress.succeed(
      `wrote ${basename(modelPath)}${external ? ` + ${dataName}` : ''} (${formatBytes(total)} of weights)`,
    );
    return { modelPath, dataPath: external ? dataPath : undefined, weightBytes: total };
  } catch (error) {
    progress.fail();
    writer?.close();
    if (writer) rmSync(writer.path, { force: true });
    rmSync(partialModel, { force: true });
    throw error;
  }
}

/** Adds the whole decoder to `b`. Exposed so tests and other builders can compose it. */
export function buildLlamaGraph(b: GraphBuilder, c: LlamaConfig, source: WeightSource, dtype: FloatType): void {
  const specs = new Map(weightSpecs(c).map((s) => [s.name, s]));
  const weight = (name: string) => {
    const spec = specs.get(name) as WeightSpec;
    return b.streamedInitializer(name, spec.dims, dtype, source(spec));
  };
  const elem = dtype;
  const toCompute = (x: string, name: string) =>
    dtype === 'float32' ? x : b.op('Cast', [x], { name, attributes: { to: FLOAT } });
  const fromCompute = (x: string, name: string) =>
    dtype === 'float32' ? x : b.op('Cast', [x], { name, attributes: { to: onnxElementType(dtype) } });

  const ids = b.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const mask = b.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
  const positions = b.input('position_ids', 'int64', ['batch_size', 'sequence_length']);
  const past = Array.from({ length: c.layers }, (_, l) => ({
    key: b.input(`past_key_values.${l}.key`, elem, ['batch_size', c.kvHeads, 'past_sequence_length', c.headDim]),
    value: b.input(`past_key_values.${l}.value`, elem, ['batch_size', c.kvHeads, 'past_sequence_length', c.headDim]),
  }));

  const embedding = weight('model.embed_tokens.weight');
  let x = b.op('Gather', [embedding, ids], { name: '/model/embed_tokens/Gather' });
  const { cos, sin } = rotaryTables(b, c, positions, dtype);
  const maskBias = causalMaskBias(b, ids, mask);

  const rmsNorm = (input: string, gamma: string, name: string) => {
    const xf = toCompute(input, `${name}/Cast`);
    const squared = b.op('Mul', [xf, xf], { name: `${name}/Square` });
    const meanSquare = b.op('ReduceMean', [squared], {
      name: `${name}/ReduceMean`,
      attributes: { axes: [-1], keepdims: 1 },
    });
    const rms = b.op(
      'Sqrt',
      [b.op('Add', [meanSquare, b.scalar(c.rmsNormEps, 'float32')], { name: `${name}/AddEps` })],
      { name: `${name}/Sqrt` },
    );
    const normalized = fromCompute(b.op('Div', [xf, rms], { name: `${name}/Div` }), `${name}/CastBack`);
    return b.op('Mul', [normalized, weight(gamma)], { name: `${name}/Scale` });
  };
  const linear = (input: string, param: string, name: string, bias?: string) => {
    const product = b.op('MatMul', [input, weight(param)], { name: `${name}/MatMul` });
    return bias ? b.op('Add', [product, weight(bias)], { name: `${name}/BiasAdd` }) : product;
  };
  const rotate = (t: string, name: string) => {
    // rotate_half: [x1, x2] → [−x2, x1] over the last axis, then t·cos + rotate_half(t)·sin.
    const [x1, x2] = b.node('Split', [t, b.int64([c.headDim / 2, c.headDim / 2])], {
      name: `${name}/Split`,
      outputs: 2,
      attributes: { axis: -1 },
    });
    const rotated = b.op('Concat', [b.op('Neg', [x2], { name: `${name}/Neg` }), x1], {
      name: `${name}/Concat`,
      attributes: { axis: -1 },
    });
    return b.op(
      'Add',
      [b.op('Mul', [t, cos], { name: `${name}/MulCos` }), b.op('Mul', [rotated, sin], { name: `${name}/MulSin` })],
      { name: `${name}/Add` },
    );
  };
  const toHeads = (t: string, heads: number, name: string) =>
    b.op('Transpose', [b.op('Reshape', [t, b.int64([0, 0, heads, c.headDim])], { name: `${name}/Reshape` })], {
      name: `${name}/Transpose`,
      attributes: { perm: [0, 2, 1, 3] },
    });

  for (let l = 0; l < c.layers; l++) {
    const p = `/model/layers.${l}`;
    const w = `model.layers.${l}`;
    const h = rmsNorm(x, `${w}.input_layernorm.weight`, `${p}/input_layernorm`);
    const bias = (name: string) => (c.attentionBias ? `${w}.self_attn.${name}.bias` : undefined);
    const q = toHeads(
      linear(h, `${w}.self_attn.q_proj.weight`, `${p}/self_attn/q_proj`, bias('q_proj')),
      c.heads,
      `${p}/self_attn/q`,
    );
    const k = toHeads(
      linear(h, `${w}.self_attn.k_proj.weight`, `${p}/self_attn/k_proj`, bias('k_proj')),
      c.kvHeads,
      `${p}/self_attn/k`,
    );
    const v = toHeads(
      linear(h, `${w}.self_attn.v_proj.weight`, `${p}/self_attn/v_proj`, bias('v_proj')),
      c.kvHeads,
      `${p}/self_attn/v`,
    );
    const presentKey = b.op('Concat', [past[l].key, rotate(k, `${p}/self_attn/rotary_k`)], {
      name: `${p}/self_attn/present_key`,
      attributes: { axis: 2 },
    });
    const presentValue = b.op('Concat', [past[l].value, v], {
      name: `${p}/self_attn/present_value`,
      attributes: { axis: 2 },
    });
    b.output(presentKey, elem, ['batch_size', c.kvHeads, 'total_sequence_length', c.headDim], `present.${l}.key`);
    b.output(presentValue, elem, ['batch_size', c.kvHeads, 'total_sequence_length', c.headDim], `present.${l}.value`);

    // Query head h uses KV head floor(h / groups): [B, heads, S, D] → [B, kvHeads, groups·S, D] lines them up.
    const scaled = b.op('Mul', [rotate(q, `${p}/self_attn/rotary_q`), b.scalar(1 / Math.sqrt(c.headDim), dtype)], {
      name: `${p}/self_attn/scale`,
    });
    const grouped = b.op('Reshape', [scaled, b.int64([0, c.kvHeads, -1, c.headDim])], {
      name: `${p}/self_attn/group_q`,
    });
    const keysT = b.op('Transpose', [presentKey], { name: `${p}/self_attn/key_t`, attributes: { perm: [0, 1, 3, 2] } });
    const groupedScores = b.op('MatMul', [grouped, keysT], { name: `${p}/self_attn/scores` });
    const scores = toCompute(
      b.op('Reshape', [groupedScores, b.int64([0, c.heads, -1, 0])], { name: `${p}/self_attn/ungroup_scores` }),
      `${p}/self_attn/scores_fp32`,
    );
    const probs = b.op('Softmax', [b.op('Add', [scores, maskBias], { name: `${p}/self_attn/mask` })], {
      name: `${p}/self_attn/softmax`,
      attributes: { axis: -1 },
    });
    const groupedProbs = b.op(
      'Reshape',
      [fromCompute(probs, `${p}/self_attn/probs_cast`), b.int64([0, c.kvHeads, -1, 0])],
      { name: `${p}/self_attn/group_probs` },
    );
    const context = b.op(
      'Reshape',
      [
        b.op('MatMul', [groupedProbs, presentValue], { name: `${p}/self_attn/context` }),
        b.int64([0, c.heads, -1, c.headDim]),
      ],
      { name: `${p}/self_attn/ungroup_context` },
    );
    const merged = b.op(
      'Reshape',
      [
        b.op('Transpose', [context], { name: `${p}/self_attn/context_t`, attributes: { perm: [0, 2, 1, 3] } }),
        b.int64([0, 0, c.heads * c.headDim]),
      ],
      { name: `${p}/self_attn/merge_heads` },
    );
    x = b.op('Add', [x, linear(merged, `${w}.self_attn.o_proj.weight`, `${p}/self_attn/o_proj`)], {
      name: `${p}/attn_residual`,
    });

    const h2 = rmsNorm(x, `${w}.post_attention_layernorm.weight`, `${p}/post_attention_layernorm`);
    const gate = linear(h2, `${w}.mlp.gate_proj.weight`, `${p}/mlp/gate_proj`);
    const silu = b.op('Mul', [gate, b.op('Sigmoid', [gate], { name: `${p}/mlp/Sigmoid` })], { name: `${p}/mlp/SiLU` });
    const up = linear(h2, `${w}.mlp.up_proj.weight`, `${p}/mlp/up_proj`);
    const down = linear(
      b.op('Mul', [silu, up], { name: `${p}/mlp/gate_up` }),
      `${w}.mlp.down_proj.weight`,
      `${p}/mlp/down_proj`,
    );
    x = b.op('Add', [x, down], { name: `${p}/mlp_residual` });
  }

  const normalized = rmsNorm(x, 'model.norm.weight', '/model/norm');
  const logits = c.tiedEmbeddings
    ? tiedHead(b, normalized, embedding, ids, c)
    : b.op('MatMul', [normalized, weight('lm_head.weight')], { name: '/lm_head/MatMul' });
  b.output(logits, elem, ['batch_size', 'sequence_length', c.vocabSize], 'logits');
}

/**
 * logits = x · embeddingᵀ as Gemm(transB=1) on [B·S, hidden]: MatMul would need Transpose(embedding), which
 * onnxruntime constant-folds into a second copy of the largest tensor (seconds of load time and its memory).
 */
function tiedHead(b: GraphBuilder, x: string, embedding: string, ids: string, c: LlamaConfig): string {
  const rows = b.op('Reshape', [x, b.int64([-1, c.hiddenSize])], { name: '/lm_head/flatten' });
  const product = b.op('Gemm', [rows, embedding], { name: '/lm_head/Gemm', attributes: { transB: 1 } });
  const shape = b.op(
    'Concat',
    [b.op('Shape', [ids], { name: '/lm_head/batch_and_sequence' }), b.int64([c.vocabSize])],
    { name: '/lm_head/logits_shape', attributes: { axis: 0 } },
  );
  return b.op('Reshape', [product, shape], { name: '/lm_head/unflatten' });
}

/** cos/sin of position·θ^(−2i/D), duplicated over both halves (rotate-half layout), shaped [B, 1, S, D]. */
function rotaryTables(
  b: GraphBuilder,
  c: LlamaConfig,
  positions: string,
  dtype: FloatType,
): { cos: string; sin: string } {
  const half = c.headDim / 2;
  const inverseFrequencies = Float32Array.from({ length: half }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / c.headDim));
  const frequencies = b.initializer('rotary.inv_freq', inverseFrequencies, [half], 'float32');
  const position = b.op(
    'Unsqueeze',
    [b.op('Cast', [positions], { name: '/rotary/Cast', attributes: { to: FLOAT } }), b.int64([-1])],
    { name: '/rotary/Unsqueeze' },
  );
  const angles = b.op('Mul', [position, frequencies], { name: '/rotary/angles' });
  const both = b.op('Concat', [angles, angles], { name: '/rotary/Concat', attributes: { axis: -1 } });
  const table = (op: 'Cos' | 'Sin') => {
    const t = b.op('Unsqueeze', [b.op(op, [both], { name: `/rotary/${op}` }), b.int64([1])], {
      name: `/rotary/${op}/Unsqueeze`,
    });
    return dtype === 'float32'
      ? t
      : b.op('Cast', [t], { name: `/rotary/${op}/Cast`, attributes: { to: onnxElementType(dtype) } });
  };
  return { cos: table('Cos'), sin: table('Sin') };
}

/**
 * fp32 [B, 1, S, T] additive bias: 0 where query i (index past+i) may see key j (j ≤ past+i and
 * attention_mask[b, j] = 1), MASKED_SCORE elsewhere. past = T − S comes from the inputs' shapes at run time.
 */
function causalMaskBias(b: GraphBuilder, ids: string, mask: string): string {
  const n = '/model/causal_mask';
  const scalar = (t: string, name: string) => b.op('Squeeze', [t, b.int64([0])], { name });
  const total = scalar(
    b.op('Shape', [mask], { name: `${n}/total_len`, attributes: { start: 1, end: 2 } }),
    `${n}/total_len_scalar`,
  );
  const fresh = scalar(
    b.op('Shape', [ids], { name: `${n}/new_len`, attributes: { start: 1, end: 2 } }),
    `${n}/new_len_scalar`,
  );
  const pastLength = b.op('Sub', [total, fresh], { name: `${n}/past_len` });
  const zero = b.int64([0], []);
  const one = b.int64([1], []);
  const keyIndex = b.op('Unsqueeze', [b.op('Range', [zero, total, one], { name: `${n}/key_index` }), b.int64([0])], {
    name: `${n}/key_row`,
  });
  const queryIndex = b.op(
    'Unsqueeze',
    [b.op('Range', [pastLength, total, one], { name: `${n}/query_index` }), b.int64([1])],
    { name: `${n}/query_col` },
  );
  const causal = b.op('LessOrEqual', [keyIndex, queryIndex], { name: `${n}/causal` });
  const notPadding = b.op(
    'Unsqueeze',
    [b.op('Cast', [mask], { name: `${n}/mask_bool`, attributes: { to: BOOL } }), b.int64([1, 2])],
    { name: `${n}/mask_4d` },
  );
  const allowed = b.op('And', [causal, notPadding], { name: `${n}/allowed` });
  return b.op('Where', [allowed, b.scalar(0, 'float32'), b.scalar(MASKED_SCORE, 'float32')], { name: `${n}/bias` });
}
