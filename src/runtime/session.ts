/**
 * The only module that imports onnxruntime-node. Everything else creates sessions, builds tensors and reads
 * outputs through here, so execution providers, threading and dtype conversion are decided in one place.
 */
import * as ort from 'onnxruntime-node';
import { HatError } from '../errors.ts';
import { float16ToFloat32 } from '../onnx/float16.ts';

export { float16ToFloat32, float32ToFloat16 } from '../onnx/float16.ts';

export type Tensor = ort.Tensor;
export type TensorType = ort.Tensor.Type;
export type Feeds = Record<string, ort.Tensor>;

export interface TensorInfo {
  name: string;
  type: string;
  /** Numbers for fixed dims, strings for symbolic ones. */
  shape: Array<number | string>;
}

export interface SessionOptions {
  /** Intra-op threads; defaults to onnxruntime's choice (all cores). */
  threads?: number;
  executionProvider?: 'cpu' | 'cuda';
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Silence onnxruntime's own error log (for probes whose failures are expected and reported by hat). */
  quietRuntimeLog?: boolean;
  /**
   * Let onnxruntime's intra-op threads spin-wait between runs (its default). hat turns it off unless asked:
   * device and cloud often share cores (and edge devices their battery), and idle spinning starves the other.
   */
  spinning?: boolean;
}

/** Sessions created and not yet released: what a failed open must give back (tests check it). */
let openSessions = 0;
export const openSessionCount = (): number => openSessions;

export class ModelSession {
  readonly label: string;
  private readonly session: ort.InferenceSession;
  private released = false;

  constructor(label: string, session: ort.InferenceSession) {
    this.label = label;
    this.session = session;
    openSessions++;
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  get inputs(): TensorInfo[] {
    return describe(this.session.inputMetadata);
  }
  get outputs(): TensorInfo[] {
    return describe(this.session.outputMetadata);
  }

  async run(feeds: Feeds, outputNames?: readonly string[]): Promise<Feeds> {
    for (const name of this.session.inputNames) {
      if (!(name in feeds)) throw new HatError('RUNTIME', `input '${name}' is missing in the feeds for ${this.label}`);
    }
    try {
      return outputNames ? await this.session.run(feeds, outputNames) : await this.session.run(feeds);
    } catch (error) {
      throw new HatError(
        'RUNTIME',
        `${this.label}: ${(error as Error).message.split('\n')[0]}`,
        'the model could not run on these inputs',
        { cause: error },
      );
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    openSessions--;
    await this.session.release();
  }
}

function describe(metadata: readonly ort.InferenceSession.ValueMetadata[]): TensorInfo[] {
  return metadata.map((m) => ({
    name: m.name,
    type: m.isTensor ? String(m.type) : 'non-tensor',
    shape: m.isTensor ? [...m.shape] : [],
  }));
}

/** Opens a model from a path (external data resolves next to it) or from bytes. */
export async function createSession(
  source: string | Uint8Array,
  options: SessionOptions = {},
  label?: string,
): Promise<ModelSession> {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: [options.executionProvider ?? 'cpu'],
    graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
    logSeverityLevel: options.quietRuntimeLog ? 4 : 3,
  };
  if (options.threads) sessionOptions.intraOpNumThreads = options.threads;
  if (!options.spinning)
    sessionOptions.extra = { session: { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } };
  try {
    const session =
      typeof source === 'string'
        ? await ort.InferenceSession.create(source, sessionOptions)
        : await ort.InferenceSession.create(source, sessionOptions);
    return new ModelSession(label ?? (typeof source === 'string' ? source : 'in-memory model'), session);
  } catch (error) {
    const name = label ?? (typeof source === 'string' ? source : 'in-memory model');
    throw new HatError(
      'RUNTIME',
      `onnxruntime could not load ${name}: ${(error as Error).message.split('\n')[0]}`,
      'check that the model is complete and its external-data files sit next to it',
      { cause: error },
    );
  }
}

export function makeTensor(type: TensorType, data: ort.Tensor.DataType, dims: readonly number[]): Tensor {
  return new ort.Tensor(type, data as never, dims);
}

export function float32Tensor(data: Float32Array, dims: readonly number[]): Tensor {
  return new ort.Tensor('float32', data, dims);
}

export type IntType = 'int32' | 'int64';

/** An integer tensor (ids, masks, positions) in the type the model declares for that input. */
export function intTensor(type: IntType, values: ArrayLike<number | bigint>, dims: readonly number[]): Tensor {
  if (type === 'int32') {
    if (values instanceof Int32Array) return new ort.Tensor('int32', values, dims);
    const data = new Int32Array(values.length);
    for (let i = 0; i < values.length; i++) data[i] = Number(values[i]);
    return new ort.Tensor('int32', data, dims);
  }
  if (values instanceof BigInt64Array) return new ort.Tensor('int64', values, dims);
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]);
  return new ort.Tensor('int64', data, dims);
}

export function int64Tensor(values: ArrayLike<number | bigint>, dims: readonly number[]): Tensor {
  return intTensor('int64', values, dims);
}

/** The integer type a model declares for an input; int64 (the ONNX exporters' default) for anything else. */
export function declaredIntType(info: TensorInfo | undefined): IntType {
  return info?.type === 'int32' ? 'int32' : 'int64';
}

/** An all-zero tensor of the given type (fp16 as Uint16Array); zero-length dims give an empty past. */
export function zerosTensor(type: 'float32' | 'float16', dims: readonly number[]): Tensor {
  const count = dims.reduce((a, b) => a * b, 1);
  return type === 'float16'
    ? new ort.Tensor('float16', new Uint16Array(count), dims)
    : new ort.Tensor('float32', new Float32Array(count), dims);
}

/** Float32 view of a float32 or float16 tensor (fp16 arrives as Uint16Array on Node 20). */
export function tensorToFloat32(tensor: Tensor): Float32Array {
  if (tensor.type === 'float32') return tensor.data as Float32Array;
  if (tensor.type === 'float16') return float16ToFloat32(tensor.data as Uint16Array);
  throw new HatError('RUNTIME', `expected a float tensor, got ${tensor.type}`);
}
