/**
 * Small decoder-only LLMs built in code, so the splitter is proven without any downloaded model. Each is a
 * Llama-style stack (pre-norm, rotary positions, SiLU MLP, grouped KV heads) with Optimum IO names, a correct
 * causal mask (multi-token steps on a non-empty cache work) and these knobs:
 *  - residual 'add': plain Add + LayerNormalization; 'fused-skip': onnxruntime-genai style
 *    SkipSimplifiedLayerNormalization, whose output 3 carries the residual across layer boundaries;
 *  - named: false gives a graph without any node names;
 *  - tiedEmbeddings: the LM head reads the embedding table (it must land in both input and output parts).
 * Weights go through a sink, so the benchmark can stream a >1 GB model to external data.
 */
import {
  DataType,
  ExternalDataWriter,
  onnx,
  saveModel,
  type AttributeProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from '../../src/onnx/model-io.ts';
import { basename } from 'node:path';

export interface TinyDecoderConfig {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  ffn: number;
  residual: 'add' | 'fused-skip';
  named: boolean;
  tiedEmbeddings: boolean;
  seed: number;
  /** Multiplies every random weight: large activations make optimized (fused) runs drift by more than 1e-5. */
  weightScale?: number;
}

export const TINY: TinyDecoderConfig = {
  layers: 4,
  hidden: 16,
  heads: 4,
  kvHeads: 2,
  vocab: 50,
  ffn: 32,
  residual: 'add',
  named: true,
  tiedEmbeddings: false,
  seed: 1,
};

/** Receives each weight as it is generated; returns the TensorProto the graph stores. */
export type WeightSink = (name: string, dims: number[], values: Float32Array) => TensorProto;

export const inlineWeights: WeightSink = (name, dims, values) =>
  onnx.TensorProto.create({
    name,
    dims,
    dataType: DataType.FLOAT,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  });

/** Streams every weight into one external-data file as it is generated; call `close()` after building. */
export function externalWeights(dataPath: string): WeightSink & { close(): void } {
  const writer = new ExternalDataWriter(dataPath, basename(dataPath));
  const sink: WeightSink = (name, dims, values) => {
    const tensor = onnx.TensorProto.create({ name, dims, dataType: DataType.FLOAT });
    writer.appendBytes(tensor, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return tensor;
  };
  return Object.assign(sink, { close: () => writer.close() });
}

const A = onnx.AttributeProto.AttributeType;
const int = (name: string, i: number): AttributeProto => onnx.AttributeProto.create({ name, type: A.INT, i });
const float = (name: string, f: number): AttributeProto => onnx.AttributeProto.create({ name, type: A.FLOAT, f });
const ints = (name: string, values: number[]): AttributeProto =>
  onnx.AttributeProto.create({ name, type: A.INTS, ints: values });

class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private count = 0;
  private random: number;
  constructor(
    private readonly named: boolean,
    seed: number,
    private readonly sink: WeightSink,
    private readonly weightScale = 1,
  ) {
    this.random = seed >>> 0;
  }

  op(opType: string, inputs: string[], attribute: AttributeProto[] = [], outputs = 1, domain = ''): string[] {
    const id = `${opType}_${this.count++}`;
    const names = Array.from({ length: outputs }, (_, i) => `t/${id}/${i}`);
    this.nodes.push(
      onnx.NodeProto.create({
        name: this.named ? `/${id}` : '',
        opType,
        domain,
        input: inputs,
        output: names,
        attribute,
      }),
    );
    return names;
  }

  one(opType: string, inputs: string[], attribute: AttributeProto[] = [], domain = ''): string {
    return this.op(opType, inputs, attribute, 1, domain)[0];
  }

  /** Named constants are shared: the first call stores them, later calls with the same name reuse them. */
  private readonly constants = new Set<string>();

  ints(name: string, values: number[]): string {
    if (this.constants.has(name)) return name;
    this.constants.add(name);
    const bytes = new Uint8Array(values.length * 8);
    values.forEach((v, i) => new DataView(bytes.buffer).setBigInt64(i * 8, BigInt(v), true));
    this.initializers.push(
      onnx.TensorProto.create({ name, dims: [values.length], dataType: DataType.INT64, rawData: bytes }),
    );
    return name;
  }

  scalar(name: string, value: number, dataType = DataType.FLOAT): string {
    if (this.constants.has(name)) return name;
    this.constants.add(name);
    const bytes = new Uint8Array(dataType === DataType.INT64 ? 8 : 4);
    if (dataType === DataType.INT64) new DataView(bytes.buffer).setBigInt64(0, BigInt(value), true);
    else new DataView(bytes.buffer).setFloat32(0, value, true);
    this.initializers.push(onnx.TensorProto.create({ name, dims: [], dataType, rawData: bytes }));
    return name;
  }

  /** A weight of small pseudo-random values (or `fill` for norms), handed to the sink. */
  weight(name: string, dims: number[], fill?: (i: number) => number): string {
    const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
    const scale = this.weightScale / Math.sqrt(dims[0]);
    for (let i = 0; i < values.length; i++) {
      this.random = (Math.imul(this.random, 1664525) + 1013904223) >>> 0;
      values[i] = fill ? fill(i) : ((this.random / 2 ** 32) * 2 - 1) * scale;
    }
    this.initializers.push(this.sink(name, dims, values));
    return name;
  }
}

function tensorInfo(name: string, elemType: number, dims: Array<string | number>) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

export function buildTinyDecoder(
  overrides: Partial<TinyDecoderConfig> = {},
  sink: WeightSink = inlineWeights,
): ModelProto {
  const c = { ...TINY, ...overrides };
  const headDim = c.hidden / c.heads;
  const half = headDim / 2;
  const g = new GraphBuilder(c.named, c.seed, sink, c.weightScale);
  const fused = c.residual === 'fused-skip';

  // Prelude, shared by every layer: lengths from shapes, causal + padding mask, rotary tables.
  const seq = g.one(
    'Gather',
    [g.one('Shape', ['input_ids']), g.scalar('c/one_i', 1, DataType.INT64)],
    [int('axis', 0)],
  );
  const past = g.one(
    'Gather',
    [g.one('Shape', ['past_key_values.0.key']), g.scalar('c/two_i', 2, DataType.INT64)],
    [int('axis', 0)],
  );
  const total = g.one('Add', [past, seq]);
  const queryPos = g.one('Range', [past, total, 'c/one_i']);
  const keyPos = g.one('Range', [g.scalar('c/zero_i', 0, DataType.INT64), total, 'c/one_i']);
  const future = g.one('Greater', [
    g.one('Unsqueeze', [keyPos, g.ints('c/axes0', [0])]),
    g.one('Unsqueeze', [queryPos, g.ints('c/axes1', [1])]),
  ]);
  const padding = g.one('Unsqueeze', [g.one('Equal', ['attention_mask', 'c/zero_i']), g.ints('c/axes12', [1, 2])]);
  const maskBias = g.one('Where', [g.one('Or', [future, padding]), g.scalar('c/neg', -1e9), g.scalar('c/zero_f', 0)]);
  const table = (kind: 'cos' | 'sin') =>
    g.weight(`rotary.${kind}`, [64, half], (i) => {
      const angle = Math.floor(i / half) / 10000 ** ((i % half) / half);
      return kind === 'cos' ? Math.cos(angle) : Math.sin(angle);
    });
  const cos = g.one('Unsqueeze', [g.one('Gather', [table('cos'), 'position_ids']), 'c/axes1']);
  const sin = g.one('Unsqueeze', [g.one('Gather', [table('sin'), 'position_ids']), 'c/axes1']);

  const rope = (x: string) => {
    const x1 = g.one('Slice', [x, g.ints('c/s0', [0]), g.ints('c/half', [half]), g.ints('c/ax3', [3])]);
    const x2 = g.one('Slice', [x, 'c/half', g.ints('c/hd', [headDim]), 'c/ax3']);
    const a = g.one('Sub', [g.one('Mul', [x1, cos]), g.one('Mul', [x2, sin])]);
    const b = g.one('Add', [g.one('Mul', [x1, sin]), g.one('Mul', [x2, cos])]);
    return g.one('Concat', [a, b], [int('axis', 3)]);
  };
  const heads = (x: string, n: number) =>
    g.one(
      'Transpose',
      [g.one('Reshape', [x, g.ints(`c/heads${n}`, [0, 0, n, headDim])])],
      [ints('perm', [0, 2, 1, 3])],
    );
  const widen = (kv: string) => {
    // Grouped KV heads: repeat each KV head for its query heads (expand + reshape, correct at any length).
    const rep = c.heads / c.kvHeads;
    if (rep === 1) return kv;
    const stacked = g.one('Concat', Array(rep).fill(g.one('Unsqueeze', [kv, g.ints('c/axes2', [2])])), [
      int('axis', 2),
    ]);
    return g.one('Reshape', [stacked, g.ints('c/widen', [0, c.heads, -1, headDim])]);
  };
  const norm = (x: string, gamma: string) =>
    fused
      ? g.one('SimplifiedLayerNormalization', [x, gamma], [int('axis', -1), float('epsilon', 1e-5)])
      : g.one('LayerNormalization', [x, gamma], [int('axis', -1), float('epsilon', 1e-5)]);
  const skipNorm = (residual: string, delta: string, gamma: string): [string, string] => {
    const [normalized, , , sum] = g.op(
      'SkipSimplifiedLayerNormalization',
      [residual, delta, gamma],
      [float('epsilon', 1e-5)],
      4,
      'com.microsoft',
    );
    // Like model-builder exports, leave mean / inv_std unnamed: only the normalised output and the residual are used.
    const node = g.nodes[g.nodes.length - 1];
    node.output = [normalized, '', '', sum];
    return [normalized, sum];
  };
  const ones = (i: number) => 1 + 0.01 * (i % 7);

  const embedding = g.weight('embed.weight', [c.vocab, c.hidden]);
  let stream = g.one('Gather', [embedding, 'input_ids']);
  let normalized = norm(stream, g.weight('layers.0.norm1', [c.hidden], ones));
  let pendingDelta: string | undefined; // fused mode: the MLP output still to be added by the next Skip node
  for (let layer = 0; layer < c.layers; layer++) {
    const p = `layers.${layer}`;
    if (fused && pendingDelta)
      [normalized, stream] = skipNorm(stream, pendingDelta, g.weight(`${p}.norm1`, [c.hidden], ones));
    else if (!fused && layer > 0) normalized = norm(stream, g.weight(`${p}.norm1`, [c.hidden], ones));
    const q = rope(heads(g.one('MatMul', [normalized, g.weight(`${p}.q`, [c.hidden, c.hidden])]), c.heads));
    const k = rope(
      heads(g.one('MatMul', [normalized, g.weight(`${p}.k`, [c.hidden, c.kvHeads * headDim])]), c.kvHeads),
    );
    const v = heads(g.one('MatMul', [normalized, g.weight(`${p}.v`, [c.hidden, c.kvHeads * headDim])]), c.kvHeads);
    g.nodes.push(
      onnx.NodeProto.create({
        name: c.named ? `/${p}/present_key` : '',
        opType: 'Concat',
        input: [`past_key_values.${layer}.key`, k],
        output: [`present.${layer}.key`],
        attribute: [int('axis', 2)],
      }),
    );
    g.nodes.push(
      onnx.NodeProto.create({
        name: c.named ? `/${p}/present_value` : '',
        opType: 'Concat',
        input: [`past_key_values.${layer}.value`, v],
        output: [`present.${layer}.value`],
        attribute: [int('axis', 2)],
      }),
    );
    const keys = g.one('Transpose', [widen(`present.${layer}.key`)], [ints('perm', [0, 1, 3, 2])]);
    const scores = g.one('Add', [
      g.one('Mul', [g.one('MatMul', [q, keys]), g.scalar(`${p}.scale`, 1 / Math.sqrt(headDim))]),
      maskBias,
    ]);
    const context = g.one('MatMul', [g.one('Softmax', [scores], [int('axis', -1)]), widen(`present.${layer}.value`)]);
    const merged = g.one('Reshape', [
      g.one('Transpose', [context], [ints('perm', [0, 2, 1, 3])]),
      g.ints('c/merge', [0, 0, c.hidden]),
    ]);
    const attention = g.one('MatMul', [merged, g.weight(`${p}.o`, [c.hidden, c.hidden])]);
    let mlpInput: string;
    if (fused) [mlpInput, stream] = skipNorm(stream, attention, g.weight(`${p}.norm2`, [c.hidden], ones));
    else {
      stream = g.one('Add', [stream, attention]);
      mlpInput = norm(stream, g.weight(`${p}.norm2`, [c.hidden], ones));
    }
    const up = g.one('MatMul', [mlpInput, g.weight(`${p}.up`, [c.hidden, c.ffn])]);
    const mlp = g.one('MatMul', [g.one('Mul', [up, g.one('Sigmoid', [up])]), g.weight(`${p}.down`, [c.ffn, c.hidden])]);
    if (fused) pendingDelta = mlp;
    else stream = g.one('Add', [stream, mlp]);
  }
  const finalNorm = fused
    ? g.op(
        'SkipSimplifiedLayerNormalization',
        [stream, pendingDelta!, g.weight('final_norm', [c.hidden], ones)],
        [float('epsilon', 1e-5)],
        1,
        'com.microsoft',
      )[0]
    : norm(stream, g.weight('final_norm', [c.hidden], ones));
  const head = c.tiedEmbeddings
    ? g.one('Transpose', [embedding], [ints('perm', [1, 0])])
    : g.weight('lm_head', [c.hidden, c.vocab]);
  g.nodes.push(
    onnx.NodeProto.create({
      name: c.named ? '/lm_head' : '',
      opType: 'MatMul',
      input: [finalNorm, head],
      output: ['logits'],
    }),
  );

  const kvShape = (length: string) => ['batch_size', c.kvHeads, length, headDim];
  const layers = Array.from({ length: c.layers }, (_, i) => i);
  return onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'hat tiny-decoders',
    opsetImport: [{ domain: '', version: 17 }, ...(fused ? [{ domain: 'com.microsoft', version: 1 }] : [])],
    graph: {
      name: 'tiny-decoder',
      node: g.nodes,
      initializer: g.initializers,
      input: [
        tensorInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
        tensorInfo('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']),
        tensorInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
        ...layers.flatMap((i) => [
          tensorInfo(`past_key_values.${i}.key`, DataType.FLOAT, kvShape('past_sequence_length')),
          tensorInfo(`past_key_values.${i}.value`, DataType.FLOAT, kvShape('past_sequence_length')),
        ]),
      ],
      output: [
        tensorInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', c.vocab]),
        ...layers.flatMap((i) => [
          tensorInfo(`present.${i}.key`, DataType.FLOAT, kvShape('total_sequence_length')),
          tensorInfo(`present.${i}.value`, DataType.FLOAT, kvShape('total_sequence_length')),
        ]),
      ],
    },
  });
}

/** Builds and saves a tiny decoder (weights inline, or streamed to `<path>.data`); returns the path. */
export async function writeTinyDecoder(
  path: string,
  overrides: Partial<TinyDecoderConfig> = {},
  storage: 'inline' | 'external' = 'inline',
): Promise<string> {
  if (storage === 'inline') {
    await saveModel(buildTinyDecoder(overrides), path);
    return path;
  }
  const sink = externalWeights(`${path}.data`);
  try {
    await saveModel(buildTinyDecoder(overrides, sink), path);
  } finally {
    sink.close();
  }
  return path;
}
