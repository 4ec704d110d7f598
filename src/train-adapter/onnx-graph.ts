/**
 * Just enough graph building for the small graphs this module writes (the MatMul kernels and adapter.onnx),
 * on onnx-proto via src/onnx/model-io.ts. Names are generated so each builder call reads like one line of
 * the maths it stands for.
 */
import { DataType, onnx, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/model-io.ts';

export const OPSET = 17;
const AttributeType = onnx.AttributeProto.AttributeType;

export type Dim = number | string;
export type AttributeValue = number | number[] | string | TensorProto;

export function valueInfo(name: string, elemType: number, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

export function floatTensor(name: string, data: Float32Array, dims: number[]): TensorProto {
  const bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  return { name, dataType: DataType.FLOAT, dims, rawData: bytes };
}

export function int64Tensor(name: string, values: number[]): TensorProto {
  const data = new BigInt64Array(values.map((v) => BigInt(v)));
  return { name, dataType: DataType.INT64, dims: [values.length], rawData: new Uint8Array(data.buffer) };
}

function attribute(name: string, value: AttributeValue) {
  if (typeof value === 'number') {
    return Number.isInteger(value) && !Object.is(value, -0) ? { name, type: AttributeType.INT, i: value } : { name, type: AttributeType.FLOAT, f: value };
  }
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  return { name, type: AttributeType.TENSOR, t: value };
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;

  constructor(private readonly prefix: string) {}

  /** Adds a node and returns its output names (fresh names unless given). */
  op(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, outputs?: string[] | number): string[] {
    const names = Array.isArray(outputs)
      ? outputs
      : Array.from({ length: outputs ?? 1 }, () => `${this.prefix}/${opType}_${this.counter++}`);
    this.nodes.push({
      opType,
      name: `${this.prefix}/${opType}_node_${this.counter++}`,
      input: inputs,
      output: names,
      attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
    });
    return names;
  }

  /** One-output shorthand. */
  op1(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, output?: string): string {
    return this.op(opType, inputs, attributes, output ? [output] : 1)[0];
  }

  weight(name: string, data: Float32Array, dims: number[]): string {
    this.initializers.push(floatTensor(name, data, dims));
    return name;
  }

  ints(values: number[]): string {
    const name = `${this.prefix}/const_${this.counter++}`;
    this.initializers.push(int64Tensor(name, values));
    return name;
  }

  scalar(value: number): string {
    const name = `${this.prefix}/const_${this.counter++}`;
    this.initializers.push(floatTensor(name, new Float32Array([value]), []));
    return name;
  }

  model(name: string, inputs: ValueInfoProto[], outputs: ValueInfoProto[], docString?: string): ModelProto {
    return {
      irVersion: 8,
      producerName: 'hat',
      docString,
      opsetImport: [{ domain: '', version: OPSET }],
      graph: { name, node: this.nodes, initializer: this.initializers, input: inputs, output: outputs },
    };
  }
}
