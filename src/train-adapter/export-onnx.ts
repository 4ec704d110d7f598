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
import { DataType, ExternalDataWriter, saveModel, type ModelProto } from '../onnx/model-io.ts';
import type { KvPair } from '../split/manifest.ts';
import type { AdapterParams, AttentionAdapterConfig } from './attention-adapter.ts';
import type { LinearAdapter } from './linear-adapter.ts';
import { GraphBuilder, valueInfo } from './onnx-graph.ts';
import { inverseFrequencies } from './rope.ts';

export const ADAPTER_INPUT = 'hidden_states';

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
}

const LOWEST_FLOAT = -3.4028234663852886e38;

function hiddenIn(graph: GraphBuilder, options: AdapterExportOptions): string {
  return options.ioType === 'float16' ? graph.op1('Cast', [ADAPTER_INPUT], { to: DataType.FLOAT }) : ADAPTER_INPUT;
}

function hiddenOut(graph: GraphBuilder, value: string, options: AdapterExportOptions): void {
  if (options.ioType === 'float16') graph.op1('Cast', [value], { to: DataType.FLOAT16 }, options.outputName);
  else graph.op1('Identity', [value], {}, options.outputName);
}

function hiddenType(options: AdapterExportOptions): number {
  return options.ioType === 'float16' ? DataType.FLOAT16 : DataType.FLOAT;
}

/** x / sqrt(mean(x²) + eps) · weight over the last axis. */
function rmsNormNodes(graph: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = graph.op1('ReduceMean', [graph.op1('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inverse = graph.op1('Reciprocal', [graph.op1('Sqrt', [graph.op1('Add', [meanSquare, graph.scalar(eps)])])]);
  return graph.op1('Mul', [graph.op1('Mul', [x, inverse]), weight]);
}

/** t·cos + rotate_half(t)·sin for t [B, heads, S, headDim]; rotate_half(t) = [−t₂, t₁]. */
function ropeNodes(graph: GraphBuilder, t: string, cos: string, sin: string, headDim: number): string {
  const half = headDim / 2;
  const first = graph.op1('Slice', [t, graph.ints([0]), graph.ints([half]), graph.ints([3])]);
  const second = graph.op1('Slice', [t, graph.ints([half]), graph.ints([headDim]), graph.ints([3])]);
  const rotated = graph.op1('Concat', [graph.op1('Neg', [second]), first], { axis: 3 });
  return graph.op1('Add', [graph.op1('Mul', [t, cos]), graph.op1('Mul', [rotated, sin])]);
}

/** [B, S, heads·headDim] → [B, heads, S, headDim]. */
function splitHeads(graph: GraphBuilder, x: string, heads: number, headDim: number): string {
  return graph.op1('Transpose', [graph.op1('Reshape', [x, graph.ints([0, 0, heads, headDim])])], { perm: [0, 2, 1, 3] });
}

export function attentionAdapterModel(params: AdapterParams, config: AttentionAdapterConfig, options: AdapterExportOptions): ModelProto {
  const { hidden, heads, kvHeads, headDim } = config;
  const rep = heads / kvHeads;
  const graph = new GraphBuilder('adapter');
  const x = hiddenIn(graph, options);
  const normed = rmsNormNodes(graph, x, graph.weight('adapter.input_norm.weight', params.inputNorm, [hidden]), config.normEps);
  const project = (name: string, weight: Float32Array, width: number) =>
    graph.op1('MatMul', [normed, graph.weight(name, weight, [hidden, width])]);
  const q = splitHeads(graph, project('adapter.q_proj.weight', params.wq, heads * headDim), heads, headDim);
  const k = splitHeads(graph, project('adapter.k_proj.weight', params.wk, kvHeads * headDim), kvHeads, headDim);
  const v = splitHeads(graph, project('adapter.v_proj.weight', params.wv, kvHeads * headDim), kvHeads, headDim);

  // cos/sin [B, 1, S, headDim] of position · θ^(−2i/headDim), both halves alike.
  const positions = graph.op1('Unsqueeze', [graph.op1('Cast', ['position_ids'], { to: DataType.FLOAT }), graph.ints([-1])]);
  const frequencies = graph.weight('adapter.rope.inv_freq', inverseFrequencies(headDim, config.ropeTheta), [headDim / 2]);
  const angles = graph.op1('Mul', [positions, frequencies]);
  const both = graph.op1('Concat', [angles, angles], { axis: -1 });
  const cos = graph.op1('Unsqueeze', [graph.op1('Cos', [both]), graph.ints([1])]);
  const sin = graph.op1('Unsqueeze', [graph.op1('Sin', [both]), graph.ints([1])]);
  const qRotated = ropeNodes(graph, q, cos, sin, headDim);
  const kRotated = ropeNodes(graph, k, cos, sin, headDim);
  const presentKey = graph.op1('Concat', [ADAPTER_KV.pastKey, kRotated], { axis: 2 }, ADAPTER_KV.presentKey);
  const presentValue = graph.op1('Concat', [ADAPTER_KV.pastValue, v], { axis: 2 }, ADAPTER_KV.presentValue);

  // Grouped heads: q [B, kvHeads, rep, S, hd] against k, v [B, kvHeads, 1, T, hd] (MatMul broadcasts rep).
  const grouped = graph.op1('Reshape', [qRotated, graph.ints([0, kvHeads, rep, -1, headDim])]);
  const keys = graph.op1('Unsqueeze', [presentKey, graph.ints([2])]);
  const values = graph.op1('Unsqueeze', [presentValue, graph.ints([2])]);
  const scores = graph.op1('Mul', [
    graph.op1('MatMul', [grouped, graph.op1('Transpose', [keys], { perm: [0, 1, 2, 4, 3] })]),
    graph.scalar(1 / Math.sqrt(headDim)),
  ]);

  // Key j is visible to new token i (absolute position past+i) iff j ≤ past+i and attention_mask[b, j] = 1.
  const total = graph.op1('Squeeze', [graph.op1('Shape', ['attention_mask'], { start: 1, end: 2 }), graph.ints([0])]);
  const length = graph.op1('Squeeze', [graph.op1('Shape', [ADAPTER_INPUT], { start: 1, end: 2 }), graph.ints([0])]);
  const zero = graph.op1('Squeeze', [graph.ints([0]), graph.ints([0])]);
  const one = graph.op1('Squeeze', [graph.ints([1]), graph.ints([0])]);
  const keyIndex = graph.op1('Unsqueeze', [graph.op1('Range', [zero, total, one]), graph.ints([0])]);
  const queryIndex = graph.op1('Unsqueeze', [graph.op1('Range', [graph.op1('Sub', [total, length]), total, one]), graph.ints([1])]);
  const causal = graph.op1('LessOrEqual', [keyIndex, queryIndex]);
  const notPadding = graph.op1('Unsqueeze', [graph.op1('Cast', ['attention_mask'], { to: DataType.BOOL }), graph.ints([1, 2, 3])]);
  const visible = graph.op1('And', [causal, notPadding]);
  const masked = graph.op1('Where', [visible, scores, graph.scalar(LOWEST_FLOAT)]);
  const weights = graph.op1('Softmax', [masked], { axis: -1 });

  const attended = graph.op1('Reshape', [graph.op1('MatMul', [weights, values]), graph.ints([0, heads, -1, headDim])]);
  const merged = graph.op1('Reshape', [graph.op1('Transpose', [attended], { perm: [0, 2, 1, 3] }), graph.ints([0, 0, heads * headDim])]);
  const update = graph.op1('MatMul', [merged, graph.weight('adapter.o_proj.weight', params.wo, [heads * headDim, hidden])]);
  hiddenOut(graph, graph.op1('Add', [x, update]), options);

  const kvInfo = (name: string, length: string) => valueInfo(name, DataType.FLOAT, ['batch', kvHeads, length, headDim]);
  return graph.model('hat_attention_adapter', [
    valueInfo(ADAPTER_INPUT, hiddenType(options), ['batch', 'sequence', hidden]),
    valueInfo('attention_mask', DataType.INT64, ['batch', 'total_sequence']),
    valueInfo('position_ids', DataType.INT64, ['batch', 'sequence']),
    kvInfo(ADAPTER_KV.pastKey, 'past_sequence'),
    kvInfo(ADAPTER_KV.pastValue, 'past_sequence'),
  ], [
    valueInfo(options.outputName, hiddenType(options), ['batch', 'sequence', hidden]),
    kvInfo(ADAPTER_KV.presentKey, 'total_sequence'),
    kvInfo(ADAPTER_KV.presentValue, 'total_sequence'),
  ], `HAT attention adapter: ${heads} heads (${kvHeads} kv) × ${headDim}, hidden ${hidden}, rope θ ${config.ropeTheta}`);
}

export function linearAdapterModel(adapter: LinearAdapter, options: AdapterExportOptions): ModelProto {
  const graph = new GraphBuilder('adapter');
  const x = hiddenIn(graph, options);
  const product = graph.op1('MatMul', [x, graph.weight('adapter.linear.weight', adapter.weight, [adapter.hidden, adapter.hidden])]);
  hiddenOut(graph, graph.op1('Add', [product, graph.weight('adapter.linear.bias', adapter.bias, [adapter.hidden])]), options);
  return graph.model('hat_linear_adapter',
    [valueInfo(ADAPTER_INPUT, hiddenType(options), ['batch', 'sequence', adapter.hidden])],
    [valueInfo(options.outputName, hiddenType(options), ['batch', 'sequence', adapter.hidden])],
    `HAT linear adapter (ridge regression), hidden ${adapter.hidden}`);
}

/** Weights beyond this go to `<file>.data` beside the model (protobuf caps a message at 2 GiB). */
const INLINE_LIMIT = 1024 * 1024 * 1024;

/** Writes the model; returns the external-data files written beside it (relative names). */
export async function saveAdapterModel(model: ModelProto, path: string): Promise<string[]> {
  const initializers = model.graph?.initializer ?? [];
  const bytes = initializers.reduce((sum, t) => sum + (t.rawData?.length ?? 0), 0);
  if (bytes <= INLINE_LIMIT) {
    await saveModel(model, path);
    return [];
  }
  const location = `${basename(path)}.data`;
  const writer = new ExternalDataWriter(`${path}.data`, location);
  try {
    for (const tensor of initializers) {
      if ((tensor.rawData?.length ?? 0) >= 1024) writer.appendBytes(tensor, tensor.rawData!);
    }
  } catch (error) {
    throw new HatError('OUTPUT_EXISTS', `could not write ${path}.data: ${(error as Error).message}`, 'check free disk space and permissions', { cause: error });
  } finally {
    writer.close();
  }
  await saveModel(model, path);
  return [location];
}
