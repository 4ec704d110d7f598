/**
 * adapter.onnx: the trained adapter as an ONNX graph the device runs between the input and output parts.
 *
 * attention:  hidden_states [B, S, d], attention_mask [B, past+S], position_ids [B, S],
 *             past_key_values.adapter.key/value [B, kvHeads, past, headDim]
 *          →  <output name> [B, S, d], present.adapter.key/value [B, kvHeads, past+S, headDim]
 * linear:     hidden_states [B, S, d] → <output name> [B, S, d]
 *
 * The output takes the output part's boundary input name, so adapter → output part wires by name. The graph
 * computes exactly what adapterForward does (same RMSNorm, rotate-half RoPE, causal softmax, GQA grouping);
 * the cache makes drafting incremental and the attention mask handles left padding. Opset 17, plain ops only.
 */
import { basename } from 'node:path';
import { HatError } from '../errors.ts';
import { externalWeights, GraphBuilder, inlineWeights, type WeightSink } from '../onnx/graph-builder.ts';
import { DataType, ExternalDataWriter, saveModel, type ModelProto } from '../onnx/model-io.ts';
import type { KvPair } from '../split/manifest.ts';
import type { AdapterParams, AttentionAdapterConfig } from './attention-adapter.ts';
import type { LinearAdapter } from './linear-adapter.ts';
import { inverseFrequencies } from './rope.ts';

export const ADAPTER_INPUT = 'hidden_states';

/** The attention adapter's weights in adapter.onnx, [in, out] like AdapterParams (read back by `--init adapter`). */
export const ADAPTER_WEIGHT_NAMES: Record<keyof AdapterParams, string> = {
  inputNorm: 'adapter.input_norm.weight',
  wq: 'adapter.q_proj.weight',
  wk: 'adapter.k_proj.weight',
  wv: 'adapter.v_proj.weight',
  wo: 'adapter.o_proj.weight',
};

/** The adapter's cache names, in the manifest's KV form (layer −1: the adapter is not a layer of the model). */
export const ADAPTER_KV: KvPair = {
  layer: -1,
  pastKey: 'past_key_values.adapter.key',
  pastValue: 'past_key_values.adapter.value',
  presentKey: 'present.adapter.key',
  presentValue: 'present.adapter.value',
};

export interface AdapterExportOptions {
  /** The output part's hidden-state input name (the split's middle→output boundary). */
  outputName: string;
  /** Element type of the hidden-state input and output (the split's hidden dtype); maths and cache stay fp32. */
  ioType?: 'float32' | 'float16';
  /** Where the weights go (default inline; see exportAdapter for files). */
  weights?: WeightSink;
}

const LOWEST_FLOAT = -3.4028234663852886e38;

function hiddenIn(graph: GraphBuilder, options: AdapterExportOptions, hidden: number): string {
  const input = graph.input(ADAPTER_INPUT, options.ioType ?? 'float32', ['batch', 'sequence', hidden]);
  return options.ioType === 'float16' ? graph.op('Cast', [input], { attributes: { to: DataType.FLOAT } }) : input;
}

function hiddenOut(graph: GraphBuilder, value: string, options: AdapterExportOptions, hidden: number): void {
  const cast =
    options.ioType === 'float16' ? graph.op('Cast', [value], { attributes: { to: DataType.FLOAT16 } }) : value;
  graph.output(cast, options.ioType ?? 'float32', ['batch', 'sequence', hidden], options.outputName);
}

/** x / sqrt(mean(x²) + eps) · weight over the last axis. */
function rmsNormNodes(graph: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = graph.op('ReduceMean', [graph.op('Mul', [x, x])], { attributes: { axes: [-1], keepdims: 1 } });
  const inverse = graph.op('Reciprocal', [
    graph.op('Sqrt', [graph.op('Add', [meanSquare, graph.scalar(eps, 'float32')])]),
  ]);
  return graph.op('Mul', [graph.op('Mul', [x, inverse]), weight]);
}

/** t·cos + rotate_half(t)·sin for t [B, heads, S, headDim]; rotate_half(t) = [−t₂, t₁]. */
function ropeNodes(graph: GraphBuilder, t: string, cos: string, sin: string, headDim: number): string {
  const half = headDim / 2;
  const first = graph.op('Slice', [t, graph.int64([0]), graph.int64([half]), graph.int64([3])]);
  const second = graph.op('Slice', [t, graph.int64([half]), graph.int64([headDim]), graph.int64([3])]);
  const rotated = graph.op('Concat', [graph.op('Neg', [second]), first], { attributes: { axis: 3 } });
  return graph.op('Add', [graph.op('Mul', [t, cos]), graph.op('Mul', [rotated, sin])]);
}

/** [B, S, heads·headDim] → [B, heads, S, headDim]. */
function splitHeads(graph: GraphBuilder, x: string, heads: number, headDim: number): string {
  const reshaped = graph.op('Reshape', [x, graph.int64([0, 0, heads, headDim])]);
  return graph.op('Transpose', [reshaped], { attributes: { perm: [0, 2, 1, 3] } });
}

/** Drops the leading axis of a 1-element int64 tensor: the scalar Range needs. */
function toScalar(graph: GraphBuilder, x: string): string {
  return graph.op('Squeeze', [x, graph.int64([0])]);
}

export function attentionAdapterModel(
  params: AdapterParams,
  config: AttentionAdapterConfig,
  options: AdapterExportOptions,
): ModelProto {
  const { hidden, heads, kvHeads, headDim } = config;
  const rep = heads / kvHeads;
  const graph = new GraphBuilder('hat_attention_adapter', { weights: options.weights });
  const x = hiddenIn(graph, options, hidden);
  const mask = graph.input('attention_mask', 'int64', ['batch', 'total_sequence']);
  const positionIds = graph.input('position_ids', 'int64', ['batch', 'sequence']);
  const pastKey = graph.input(ADAPTER_KV.pastKey, 'float32', ['batch', kvHeads, 'past_sequence', headDim]);
  const pastValue = graph.input(ADAPTER_KV.pastValue, 'float32', ['batch', kvHeads, 'past_sequence', headDim]);

  const normed = rmsNormNodes(
    graph,
    x,
    graph.initializer(ADAPTER_WEIGHT_NAMES.inputNorm, params.inputNorm, [hidden]),
    config.normEps,
  );
  const project = (name: 'wq' | 'wk' | 'wv', width: number) =>
    graph.op('MatMul', [normed, graph.initializer(ADAPTER_WEIGHT_NAMES[name], params[name], [hidden, width])]);
  const q = splitHeads(graph, project('wq', heads * headDim), heads, headDim);
  const k = splitHeads(graph, project('wk', kvHeads * headDim), kvHeads, headDim);
  const v = splitHeads(graph, project('wv', kvHeads * headDim), kvHeads, headDim);

  // cos/sin [B, 1, S, headDim] of position · θ^(−2i/headDim), both halves alike.
  const positions = graph.op('Unsqueeze', [
    graph.op('Cast', [positionIds], { attributes: { to: DataType.FLOAT } }),
    graph.int64([-1]),
  ]);
  const frequencies = graph.initializer('adapter.rope.inv_freq', inverseFrequencies(headDim, config.ropeTheta), [
    headDim / 2,
  ]);
  const angles = graph.op('Mul', [positions, frequencies]);
  const both = graph.op('Concat', [angles, angles], { attributes: { axis: -1 } });
  const cos = graph.op('Unsqueeze', [graph.op('Cos', [both]), graph.int64([1])]);
  const sin = graph.op('Unsqueeze', [graph.op('Sin', [both]), graph.int64([1])]);
  const presentKey = graph.op('Concat', [pastKey, ropeNodes(graph, k, cos, sin, headDim)], { attributes: { axis: 2 } });
  const presentValue = graph.op('Concat', [pastValue, v], { attributes: { axis: 2 } });

  // Grouped heads: q [B, kvHeads, rep, S, hd] against k, v [B, kvHeads, 1, T, hd] (MatMul broadcasts rep).
  const grouped = graph.op('Reshape', [
    ropeNodes(graph, q, cos, sin, headDim),
    graph.int64([0, kvHeads, rep, -1, headDim]),
  ]);
  const keys = graph.op('Unsqueeze', [presentKey, graph.int64([2])]);
  const values = graph.op('Unsqueeze', [presentValue, graph.int64([2])]);
  const keysT = graph.op('Transpose', [keys], { attributes: { perm: [0, 1, 2, 4, 3] } });
  const scores = graph.op('Mul', [
    graph.op('MatMul', [grouped, keysT]),
    graph.scalar(1 / Math.sqrt(headDim), 'float32'),
  ]);

  // Key j is visible to new token i (absolute index past+i) iff j ≤ past+i and attention_mask[b, j] = 1.
  const total = toScalar(graph, graph.op('Shape', [mask], { attributes: { start: 1, end: 2 } }));
  const length = toScalar(graph, graph.op('Shape', [positionIds], { attributes: { start: 1, end: 2 } }));
  const zero = toScalar(graph, graph.int64([0])),
    one = toScalar(graph, graph.int64([1]));
  const keyIndex = graph.op('Unsqueeze', [graph.op('Range', [zero, total, one]), graph.int64([0])]);
  const queryIndex = graph.op('Unsqueeze', [
    graph.op('Range', [graph.op('Sub', [total, length]), total, one]),
    graph.int64([1]),
  ]);
  const causal = graph.op('LessOrEqual', [keyIndex, queryIndex]);
  const notPadding = graph.op('Unsqueeze', [
    graph.op('Cast', [mask], { attributes: { to: DataType.BOOL } }),
    graph.int64([1, 2, 3]),
  ]);
  const visible = graph.op('And', [causal, notPadding]);
  const weights = graph.op('Softmax', [graph.op('Where', [visible, scores, graph.scalar(LOWEST_FLOAT, 'float32')])], {
    attributes: { axis: -1 },
  });

  const attended = graph.op('Reshape', [graph.op('MatMul', [weights, values]), graph.int64([0, heads, -1, headDim])]);
  const merged = graph.op('Reshape', [
    graph.op('Transpose', [attended], { attributes: { perm: [0, 2, 1, 3] } }),
    graph.int64([0, 0, heads * headDim]),
  ]);
  const update = graph.op('MatMul', [
    merged,
    graph.initializer(ADAPTER_WEIGHT_NAMES.wo, params.wo, [heads * headDim, hidden]),
  ]);
  hiddenOut(graph, graph.op('Add', [x, update]), options, hidden);
  graph.output(presentKey, 'float32', ['batch', kvHeads, 'total_sequence', headDim], ADAPTER_KV.presentKey);
  graph.output(presentValue, 'float32', ['batch', kvHeads, 'total_sequence', headDim], ADAPTER_KV.presentValue);
  return graph.build(
    `HAT attention adapter: ${heads} heads (${kvHeads} kv) × ${headDim}, hidden ${hidden}, rope θ ${config.ropeTheta}`,
  );
}

export function linearAdapterModel(adapter: LinearAdapter, options: AdapterExportOptions): ModelProto {
  const graph = new GraphBuilder('hat_linear_adapter', { weights: options.weights });
  const x = hiddenIn(graph, options, adapter.hidden);
  const product = graph.op('MatMul', [
    x,
    graph.initializer('adapter.linear.weight', adapter.weight, [adapter.hidden, adapter.hidden]),
  ]);
  hiddenOut(
    graph,
    graph.op('Add', [product, graph.initializer('adapter.linear.bias', adapter.bias, [adapter.hidden])]),
    options,
    adapter.hidden,
  );
  return graph.build(`HAT linear adapter (ridge regression), hidden ${adapter.hidden}`);
}

/** Models with more weight bytes than this keep them in `<file>.data` (protobuf caps a message at 2 GiB). */
const INLINE_LIMIT = 512 * 1024 * 1024;

export type AdapterToExport =
  | { kind: 'attention'; params: AdapterParams; config: AttentionAdapterConfig }
  | { kind: 'linear'; adapter: LinearAdapter };

function weightBytes(adapter: AdapterToExport): number {
  const arrays =
    adapter.kind === 'attention' ? Object.values(adapter.params) : [adapter.adapter.weight, adapter.adapter.bias];
  return arrays.reduce((sum, a) => sum + a.byteLength, 0);
}

/**
 * Writes adapter.onnx (and `<path>.data` for big adapters); returns the data files the model names, relative to it.
 * `publishedName`: the file name the model is renamed to once written (a staged export); the model names its data
 * `<publishedName>.data`, which the caller renames `<path>.data` to.
 */
export async function exportAdapter(
  path: string,
  adapter: AdapterToExport,
  options: Omit<AdapterExportOptions, 'weights'> & { inlineLimitBytes?: number; publishedName?: string },
): Promise<string[]> {
  const external = weightBytes(adapter) > (options.inlineLimitBytes ?? INLINE_LIMIT);
  const location = `${options.publishedName ?? basename(path)}.data`;
  const writer = external ? new ExternalDataWriter(`${path}.data`, location) : undefined;
  try {
    const weights = writer ? externalWeights(writer) : inlineWeights;
    const model =
      adapter.kind === 'attention'
        ? attentionAdapterModel(adapter.params, adapter.config, { ...options, weights })
        : linearAdapterModel(adapter.adapter, { ...options, weights });
    writer?.close();
    await saveModel(model, path);
  } catch (error) {
    writer?.close();
    if (error instanceof HatError) throw error;
    throw new HatError(
      'OUTPUT_EXISTS',
      `could not write ${path}: ${(error as Error).message}`,
      'check free disk space and permissions',
      { cause: error },
    );
  }
  return writer ? [location] : [];
}
