/**
 * Grouped-query attention without widening the cache. Exports of Hugging Face's `repeat_kv` widen each layer's
 * keys and values to every query head (Unsqueeze(axis 2) → Expand → Reshape) before the score and output
 * MatMuls, so every run copies the whole cache `heads / kvHeads` times, and transposes the widened keys once
 * more. Serving is bound by cache bytes, and that copy cost more than the layer's weights at long contexts.
 *
 * The split rewrites each such MatMul the way hat's own builder writes attention (models/llama-onnx.ts): its
 * other operand, [B, heads, S, X], is regrouped to [B, kvHeads, groups·S, X] (query head h = kv·groups + g, the
 * order repeat_kv produces), multiplied with the cache as it is, and the product reshaped back to
 * [B, heads, S, Y]. The same dot products, no cache copy; the widening nodes become dead and are not extracted.
 */
import {
  int64Tensor,
  isExternal,
  onnx,
  tensorBytes,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
} from '../onnx/model-io.ts';
import { GraphIndex } from './graph.ts';

export interface GroupedAttention {
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** MatMuls now reading the cache as it is (two per layer: scores and outputs). */
  rewritten: number;
}

/**
 * `nodes` in topological order; `initializers` resolves constant inputs (Unsqueeze axes from opset 13 on);
 * `kvHeadsOf` gives a cache tensor's static KV-head count (undefined for anything that is not a layer's cache).
 * Returns the nodes unchanged (rewritten 0) when no repeat_kv widening is found.
 */
export function groupQueriesOverCache(
  nodes: NodeProto[],
  initializers: Map<string, TensorProto>,
  kvHeadsOf: (tensor: string) => number | undefined,
): GroupedAttention {
  const index = new GraphIndex(onnx.GraphProto.create({ node: nodes }));
  const readers = (tensor: string) => index.consumersOf(tensor).map((i) => nodes[i]);
  const sole = (tensor: string, opType: string): NodeProto | undefined => {
    const list = readers(tensor);
    return list.length === 1 && list[0].opType === opType && !list[0].domain ? list[0] : undefined;
  };
  const constant = (tensor: string): number[] | undefined => {
    const producer = index.producer.get(tensor);
    const node = producer === undefined ? undefined : nodes[producer];
    if (node?.opType === 'Constant') return int64Values(node.attribute?.find((a) => a.name === 'value')?.t);
    return int64Values(initializers.get(tensor));
  };

  // MatMul → the cache it reads through a widening, and whether it reads it transposed (scores) or not (outputs).
  const widened = new Map<NodeProto, { cache: string; kvHeads: number; transposed: boolean }>();
  for (const unsqueeze of nodes) {
    const cache = unsqueeze.input?.[0] ?? '';
    const kvHeads = unsqueeze.opType === 'Unsqueeze' && !unsqueeze.domain ? kvHeadsOf(cache) : undefined;
    if (kvHeads === undefined) continue;
    const axes = attributeInts(unsqueeze, 'axes') ?? constant(unsqueeze.input?.[1] ?? '');
    if (axes?.length !== 1 || axes[0] !== 2) continue;
    const expand = sole(unsqueeze.output![0], 'Expand');
    const reshape = expand && sole(expand.output![0], 'Reshape');
    // Any other reader of the widened cache would still need it: such a layer is left as exported.
    const uses = reshape && matmulsReading(reshape.output![0], readers);
    for (const [matmul, transposed] of uses ?? []) widened.set(matmul, { cache, kvHeads, transposed });
  }
  if (widened.size === 0) return { nodes, initializers: [], rewritten: 0 };

  const name = (label: string) => `hat/grouped_attention/${label}`;
  const kvHeadCounts = new Set([...widened.values()].map((use) => use.kvHeads));
  const constants = [
    int64Tensor(name('zero'), [0]),
    int64Tensor(name('three'), [3]),
    int64Tensor(name('last_dim'), [-1]),
    ...[...kvHeadCounts].map((kvHeads) => int64Tensor(name(`grouped_shape_${kvHeads}`), [0, kvHeads, -1, 0])),
  ];
  const out: NodeProto[] = [];
  for (const node of nodes) {
    const use = widened.get(node);
    if (!use) {
      out.push(node);
      continue;
    }
    const label = `${node.name || node.output![0]}/hat_grouped`;
    const add = (
      opType: string,
      input: string[],
      suffix: string,
      attribute: AttributeProto[] = [],
      output?: string,
    ) => {
      const tensor = output ?? `${label}_${suffix}`;
      out.push(onnx.NodeProto.create({ name: `${label}_${suffix}`, opType, input, output: [tensor], attribute }));
      return tensor;
    };
    const other = node.input![0];
    // [B, heads, S, X] → [B, kvHeads, groups·S, X]: Reshape's 0 keeps B and X.
    const grouped = add('Reshape', [other, name(`grouped_shape_${use.kvHeads}`)], 'queries');
    const cache = use.transposed ? add('Transpose', [use.cache], 'cache_t', [ints('perm', [0, 1, 3, 2])]) : use.cache;
    const product = add('MatMul', [grouped, cache], 'product');
    const lead = add('Slice', [add('Shape', [other], 'other_shape'), name('zero'), name('three')], 'lead');
    const shape = add('Concat', [lead, name('last_dim')], 'shape', [int('axis', 0)]);
    add('Reshape', [product, shape], 'ungroup', [], node.output![0]);
  }
  return { nodes: out, initializers: constants, rewritten: widened.size };
}

/** The MatMuls reading `tensor` as their right operand, directly (false) or through a last-two-axes Transpose
 * (true); undefined when anything else reads it. */
function matmulsReading(
  tensor: string,
  readersOf: (tensor: string) => NodeProto[],
): [NodeProto, boolean][] | undefined {
  const uses: [NodeProto, boolean][] = [];
  for (const reader of readersOf(tensor)) {
    if (isMatMulReading(reader, tensor)) {
      uses.push([reader, false]);
      continue;
    }
    const transposed = reader.output?.[0] ?? '';
    const readers = readersOf(transposed);
    const swapsLastAxes = reader.opType === 'Transpose' && attributeInts(reader, 'perm')?.join() === '0,1,3,2';
    if (!swapsLastAxes || readers.length === 0 || !readers.every((m) => isMatMulReading(m, transposed)))
      return undefined;
    for (const matmul of readers) uses.push([matmul, true]);
  }
  return uses.length > 0 ? uses : undefined;
}

const isMatMulReading = (node: NodeProto, tensor: string) =>
  node.opType === 'MatMul' && !node.domain && node.input?.[1] === tensor;

function attributeInts(node: NodeProto, name: string): number[] | undefined {
  return node.attribute?.find((a) => a.name === name)?.ints?.map(Number);
}

/** An inline int64 constant's values; undefined for anything else (a tensor in external data is not read here). */
function int64Values(tensor: TensorProto | null | undefined): number[] | undefined {
  if (!tensor || tensor.dataType !== onnx.TensorProto.DataType.INT64 || isExternal(tensor)) return undefined;
  const bytes = tensorBytes({ dir: '' }, tensor);
  return [...new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)].map(Number);
}

const int = (name: string, value: number) =>
  onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });

const ints = (name: string, values: number[]) =>
  onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
