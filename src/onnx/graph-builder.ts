/**
 * Builds ONNX graphs in code: graph inputs/outputs with symbolic dims, nodes with typed attributes, and
 * initializers from Float32Array stored as fp32 or fp16. Used by the Llama builder, the adapter exporter and
 * tests that need small hand-made models.
 *
 * Weights go through a `WeightSink`: inline (raw_data, for small test models) or an ExternalDataWriter, where
 * every initializer over `externalThreshold` bytes is written straight to the data file and only its
 * TensorProto header stays in memory, so multi-GB models are built with one tensor (or one chunk) alive at a time.
 *
 * Example:
 *   const b = new GraphBuilder('tiny');
 *   const x = b.input('x', 'float32', ['batch', 4]);
 *   const w = b.initializer('w', new Float32Array(16), [4, 4]);
 *   b.output(b.op('MatMul', [x, w], { name: 'proj' }), 'float32', ['batch', 4], 'y');
 *   const bytes = encodeModel(b.build());
 */
import { HatError } from '../errors.ts';
import {
  ExternalDataWriter,
  onnx,
  type AttributeProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './model-io.ts';
import { float32ToFloat16 } from './float16.ts';

export type ElementType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool';
export type FloatType = 'float32' | 'float16';
/** A fixed size, or a symbolic name such as 'batch_size' (the same name means the same size everywhere). */
export type Dim = number | string;

const ELEMENT_TYPES: Record<ElementType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
};

export function onnxElementType(type: ElementType): number {
  return ELEMENT_TYPES[type];
}

/** Marks a number as a FLOAT attribute even when it is integral (e.g. `alpha: float(1)`). */
export class FloatAttribute {
  constructor(readonly value: number) {}
}
export const float = (value: number) => new FloatAttribute(value);

/**
 * Attribute values: integers → INT, non-integral numbers or `float(x)` → FLOAT, number[] → INTS,
 * string → STRING, FloatAttribute[] → FLOATS.
 */
export type AttributeValue = number | FloatAttribute | number[] | FloatAttribute[] | string;

export interface NodeOptions {
  /**
   * Node name; outputs are named `${name}/output_${i}` unless `outputs` names them.
   * Defaults to a unique `${opType}_${n}`.
   */
  name?: string;
  /** Output names, or how many auto-named outputs the node has (default 1). */
  outputs?: string[] | number;
  attributes?: Record<string, AttributeValue>;
  domain?: string;
}

/** Where initializer bytes end up. */
export interface WeightSink {
  store(tensor: TensorProto, bytes: Uint8Array): void;
  /** Stores a tensor whose bytes are produced piece by piece; the pieces add up to `length`. */
  storeChunks(tensor: TensorProto, length: number, chunks: Iterable<Uint8Array>): void;
}

export const inlineWeights: WeightSink = {
  // A copy, so callers may reuse their buffers.
  store(tensor, bytes) {
    tensor.rawData = bytes.slice();
  },
  storeChunks(tensor, length, chunks) {
    const bytes = new Uint8Array(length);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.length;
    }
    tensor.rawData = bytes;
  },
};

/**
 * Initializers of at least `threshold` bytes go to the external-data file; smaller ones stay inline
 * (ONNX convention).
 */
export function externalWeights(writer: ExternalDataWriter, threshold = 1024): WeightSink {
  return {
    store(tensor, bytes) {
      if (bytes.length >= threshold) writer.appendBytes(tensor, bytes);
      else inlineWeights.store(tensor, bytes);
    },
    storeChunks(tensor, length, chunks) {
      if (length >= threshold) writer.appendChunks(tensor, length, chunks);
      else inlineWeights.storeChunks(tensor, length, chunks);
    },
  };
}

/** fp32 values as little-endian bytes of the requested float type (fp16 rounds to nearest even). */
export function floatBytes(values: Float32Array, type: FloatType): Uint8Array {
  const typed = type === 'float16' ? float32ToFloat16(values) : values;
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

function valueInfo(name: string, type: ElementType, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEMENT_TYPES[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): AttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (value instanceof FloatAttribute) return { name, type: T.FLOAT, f: value.value };
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number')
    return Number.isInteger(value) ? { name, type: T.INT, i: value } : { name, type: T.FLOAT, f: value };
  if (value.length > 0 && value[0] instanceof FloatAttribute)
    return { name, type: T.FLOATS, floats: (value as FloatAttribute[]).map((v) => v.value) };
  return { name, type: T.INTS, ints: value as number[] };
}

export interface GraphBuilderOptions {
  /** Default opset of the ai.onnx domain (17: what PyTorch exports and every onnxruntime since 1.13 runs). */
  opset?: number;
  weights?: WeightSink;
  /** Extra opset imports, e.g. { 'com.microsoft': 1 }. */
  extraOpsets?: Record<string, number>;
}

export class GraphBuilder {
  readonly name: string;
  readonly opset: number;
  private readonly weights: WeightSink;
  private readonly extraOpsets: Record<string, number>;
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();
  private counter = 0;

  constructor(name: string, options: GraphBuilderOptions = {}) {
    this.name = name;
    this.opset = options.opset ?? 17;
    this.weights = options.weights ?? inlineWeights;
    this.extraOpsets = options.extraOpsets ?? {};
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new HatError('INTERNAL', `graph ${this.name}: tensor name '${name}' is used twice`);
    this.names.add(name);
    return name;
  }

  input(name: string, type: ElementType, dims: Dim[]): string {
    this.inputs.push(valueInfo(this.claim(name), type, dims));
    return name;
  }

  /**
   * Declares a graph output. With `as`, the tensor is renamed by an Identity node (outputs must carry their
   * public names, e.g. `present.0.key`); otherwise `tensor` itself becomes the output.
   */
  output(tensor: string, type: ElementType, dims: Dim[], as?: string): string {
    const name =
      as && as !== tensor ? this.node('Identity', [tensor], { name: `${as}/Identity`, outputs: [as] })[0] : tensor;
    this.outputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** A float initializer from fp32 values, stored as `type`. */
  initializer(name: string, values: Float32Array, dims: number[], type: FloatType = 'float32'): string {
    const expected = dims.reduce((a, b) => a * b, 1);
    if (values.length !== expected)
      throw new HatError('INTERNAL', `initializer ${name}: ${values.length} values for dims [${dims}]`);
    const tensor = this.tensorHeader(name, ELEMENT_TYPES[type], dims);
    this.weights.store(tensor, floatBytes(values, type));
    return name;
  }

  /**
   * A float initializer produced in fp32 chunks (each a slice of the row-major tensor, in order), converted and
   * written one chunk at a time: how multi-GB random or converted weights avoid sitting in memory.
   */
  streamedInitializer(name: string, dims: number[], type: FloatType, chunks: Iterable<Float32Array>): string {
    const count = dims.reduce((a, b) => a * b, 1);
    const tensor = this.tensorHeader(name, ELEMENT_TYPES[type], dims);
    const bytes = function* () {
      for (const chunk of chunks) yield floatBytes(chunk, type);
    };
    this.weights.storeChunks(tensor, count * (type === 'float16' ? 2 : 4), bytes());
    return name;
  }

  /** An int64 initializer (shapes, axes, indices); identical constants are shared. */
  int64(values: number[], dims: number[] = [values.length], name?: string): string {
    const key = `${dims.join(',')}:${values.join(',')}`;
    const existing = this.constants.get(key);
    if (existing && !name) return existing;
    const tensorName = name ?? `const_i64_${key.replace(/[^0-9a-z-]+/gi, '_')}`;
    const tensor = this.tensorHeader(tensorName, ELEMENT_TYPES.int64, dims);
    const data = BigInt64Array.from(values, (v) => BigInt(v));
    tensor.rawData = new Uint8Array(data.buffer);
    if (!name) this.constants.set(key, tensorName);
    return tensorName;
  }

  /** A scalar float constant of the given type (e.g. epsilon, a scale, a mask fill value). */
  scalar(value: number, type: FloatType, name?: string): string {
    const key = `${type}:${value}`;
    const existing = this.constants.get(key);
    if (existing && !name) return existing;
    const tensorName = name ?? `const_${type}_${String(value).replace(/[^0-9a-z]+/gi, '_')}`;
    const tensor = this.tensorHeader(tensorName, ELEMENT_TYPES[type], []);
    tensor.rawData = floatBytes(Float32Array.of(value), type).slice();
    if (!name) this.constants.set(key, tensorName);
    return tensorName;
  }

  private tensorHeader(name: string, dataType: number, dims: number[]): TensorProto {
    const tensor: TensorProto = { name: this.claim(name), dataType, dims };
    this.initializers.push(tensor);
    return tensor;
  }

  /** Adds a node and returns its output names. */
  node(opType: string, inputs: string[], options: NodeOptions = {}): string[] {
    const name = options.name ?? `${opType}_${this.counter++}`;
    const outputs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({ length: options.outputs ?? 1 }, (_, i) => `${name}/output_${i}`);
    outputs.forEach((o) => this.claim(o));
    this.nodes.push({
      name,
      opType,
      domain: options.domain ?? '',
      input: inputs,
      output: outputs,
      attribute: Object.entries(options.attributes ?? {}).map(([key, value]) => attribute(key, value)),
    });
    return outputs;
  }

  /** A node with one output; returns its name. */
  op(opType: string, inputs: string[], options: Omit<NodeOptions, 'outputs'> & { output?: string } = {}): string {
    return this.node(opType, inputs, { ...options, outputs: options.output ? [options.output] : 1 })[0];
  }

  build(docString?: string): ModelProto {
    const opsetImport = [
      { domain: '', version: this.opset },
      ...Object.entries(this.extraOpsets).map(([domain, version]) => ({ domain, version })),
    ];
    return {
      irVersion: 8,
      producerName: 'hat',
      opsetImport,
      docString,
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
  }
}
