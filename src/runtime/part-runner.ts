/**
 * Runs one ONNX part (or a whole decoder) step by step with its own KV cache: the unit every runtime piece is
 * made of — the cloud's middle part, the device's input/output parts and adapter, and the full model.
 * Attention mask and positions are rebuilt from the cache length (control integers, never token-derived).
 */
import { HatError } from '../errors.ts';
import type { KvPair } from '../split/manifest.ts';
import {
  createSession,
  declaredIntType,
  float32Tensor,
  float32ToFloat16,
  intTensor,
  makeTensor,
  tensorToFloat32,
  type Feeds,
  type IntType,
  type ModelSession,
  type SessionOptions,
  type Tensor,
} from './session.ts';

export interface PartIO {
  /** Input fed with token ids (input part, full model). */
  idsInput?: string;
  /** Input fed with hidden states (middle, output, adapter). */
  hiddenInput?: string;
  /** The output returned by `step`: a hidden state or logits. */
  output: string;
  kv: KvPair[];
}

export interface StepInput {
  ids?: ArrayLike<number>;
  /** [n, hiddenSize] float32. */
  hidden?: Float32Array;
}

export interface StepOutput {
  /** [rows, cols] float32. */
  data: Float32Array;
  rows: number;
  cols: number;
}

/**
 * The cache as it stands after a step. A snapshot is just a reference, so a state that has been handed out as a
 * snapshot is frozen: rolling it back copies. A state only the runner holds is rolled back in place (no
 * allocation), which matters because every speculative round ends in a rollback.
 */
export interface KvState {
  length: number;
  tensors: Map<string, Tensor>;
  frozen?: boolean;
  /**
   * A rollback compacted this state's buffers in place to make the next one: its tensors now hold another cache.
   * Restoring it throws rather than running on corrupt keys and values.
   */
  consumed?: boolean;
}

export class PartRunner {
  readonly session: ModelSession;
  readonly io: PartIO;
  private state: KvState;
  private readonly hiddenType: string;
  /** ids, mask and positions are fed in the integer type each input declares (int32 in model-builder exports). */
  private readonly intTypes: Map<string, IntType>;
  /** A reusable all-ones mask, grown as the cache grows (it is built on every step of every part). */
  private ones: Int32Array | BigInt64Array = new BigInt64Array(0);
  /** Total time spent inside onnxruntime runs, ms (for overhead accounting). */
  runMs = 0;

  private constructor(session: ModelSession, io: PartIO) {
    this.session = session;
    this.io = io;
    const inputs = new Map(session.inputs.map((i) => [i.name, i]));
    for (const name of [io.idsInput, io.hiddenInput, ...io.kv.flatMap((p) => [p.pastKey, p.pastValue])]) {
      if (name && !inputs.has(name))
        throw new HatError(
          'BAD_MANIFEST',
          `${session.label} has no input '${name}'`,
          'the split directory does not match its manifest: split again',
        );
    }
    if (!session.outputNames.includes(io.output))
      throw new HatError('BAD_MANIFEST', `${session.label} has no output '${io.output}'`, 'split again');
    this.hiddenType = io.hiddenInput ? inputs.get(io.hiddenInput)!.type : 'float32';
    this.intTypes = new Map(session.inputs.map((i) => [i.name, declaredIntType(i)]));
    const tensors = new Map<string, Tensor>();
    for (const pair of io.kv) {
      for (const name of [pair.pastKey, pair.pastValue]) {
        const info = inputs.get(name)!;
        const [, heads, , headDim] = info.shape;
        if (typeof heads !== 'number' || typeof headDim !== 'number') {
          throw new HatError(
            'UNSUPPORTED_MODEL',
            `${session.label}: KV input '${name}' has symbolic heads or head size (${JSON.stringify(info.shape)})`,
          );
        }
        const type = info.type === 'float16' ? 'float16' : 'float32';
        tensors.set(
          name,
          makeTensor(type, type === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, heads, 0, headDim]),
        );
      }
    }
    this.state = { length: 0, tensors };
  }

  static async open(path: string, io: PartIO, options: SessionOptions = {}, label?: string): Promise<PartRunner> {
    return new PartRunner(await createSession(path, options, label ?? path), io);
  }

  static fromSession(session: ModelSession, io: PartIO): PartRunner {
    return new PartRunner(session, io);
  }

  /** Cached positions. */
  get length(): number {
    return this.state.length;
  }

  /**
   * The cache as it stands, to restore later. `exclusive`: the caller is its only keeper and restores it only
   * into this runner before using it again (the cloud's per-session caches), so a rollback may still compact it
   * in place; otherwise it is frozen.
   */
  snapshot(options: { exclusive?: boolean } = {}): KvState {
    if (!options.exclusive) this.state.frozen = true;
    return this.state;
  }

  /** The caller has dropped every snapshot of the current cache: rollback may compact it in place again. */
  dropSnapshots(): void {
    this.state.frozen = false;
  }

  restore(state: KvState): void {
    if (state.consumed) {
      throw new HatError(
        'INTERNAL',
        `${this.session.label}: a KV cache state was restored after a rollback compacted it in place`,
        'an exclusive snapshot (or one whose snapshots were dropped) is used again after a rollback',
      );
    }
    this.state = state;
  }

  /** Keeps the first `length` positions of the cache (speculative rollback). */
  truncate(length: number): void {
    if (length > this.state.length)
      throw new HatError('INTERNAL', `cannot truncate a cache of ${this.state.length} to ${length}`);
    if (length === this.state.length) return;
    const tensors = new Map<string, Tensor>();
    const cut = this.state.frozen ? sliceSequence : compactSequence;
    for (const [name, tensor] of this.state.tensors) tensors.set(name, cut(tensor, length));
    if (!this.state.frozen) this.state.consumed = true;
    this.state = { length, tensors };
  }

  /** Runs n new positions on top of the cache and appends them to it. */
  async step(input: StepInput, n: number): Promise<StepOutput> {
    const past = this.state.length;
    const feeds: Feeds = {};
    for (const name of this.session.inputNames) {
      if (name === this.io.idsInput) {
        if (!input.ids || input.ids.length !== n)
          throw new HatError('INTERNAL', `${this.session.label} needs ${n} token ids`);
        feeds[name] = intTensor(this.intTypes.get(name)!, input.ids, [1, n]);
      } else if (name === this.io.hiddenInput) {
        if (!input.hidden || input.hidden.length % n !== 0)
          throw new HatError('INTERNAL', `${this.session.label} needs ${n} hidden states`);
        const dims = [1, n, input.hidden.length / n];
        feeds[name] =
          this.hiddenType === 'float16'
            ? makeTensor('float16', float32ToFloat16(input.hidden), dims)
            : float32Tensor(input.hidden, dims);
      } else if (name === 'attention_mask') {
        feeds[name] = intTensor(this.intTypes.get(name)!, this.allOnes(past + n, this.intTypes.get(name)!), [
          1,
          past + n,
        ]);
      } else if (name === 'position_ids') {
        feeds[name] = intTensor(
          this.intTypes.get(name)!,
          Array.from({ length: n }, (_, i) => past + i),
          [1, n],
        );
      } else if (this.state.tensors.has(name)) {
        feeds[name] = this.state.tensors.get(name)!;
      } else {
        throw new HatError(
          'UNSUPPORTED_MODEL',
          `${this.session.label} has an input '${name}' that hat does not know how to feed`,
        );
      }
    }
    const started = performance.now();
    const outputs = await this.session.run(feeds);
    this.runMs += performance.now() - started;
    const tensors = new Map<string, Tensor>();
    for (const pair of this.io.kv) {
      tensors.set(pair.pastKey, outputs[pair.presentKey]);
      tensors.set(pair.pastValue, outputs[pair.presentValue]);
    }
    this.state = { length: past + n, tensors };
    const out = outputs[this.io.output];
    const cols = out.dims[out.dims.length - 1];
    return { data: tensorToFloat32(out), rows: n, cols };
  }

  /** An all-ones mask of `length` in `type`: a view of one buffer that only grows. */
  private allOnes(length: number, type: IntType): Int32Array | BigInt64Array {
    const fits = type === 'int32' ? this.ones instanceof Int32Array : this.ones instanceof BigInt64Array;
    if (!fits || this.ones.length < length) {
      const size = Math.max(length, 2 * this.ones.length);
      this.ones = type === 'int32' ? new Int32Array(size).fill(1) : new BigInt64Array(size).fill(1n);
    }
    return this.ones.subarray(0, length);
  }
}

/** [B, H, S, D] → [B, H, length, D]: a strided copy per (batch, head). */
function sliceSequence(tensor: Tensor, length: number): Tensor {
  const [b, h, s, d] = tensor.dims;
  const source = tensor.data as Float32Array | Uint16Array;
  const out = new (source.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(b * h * length * d);
  for (let block = 0; block < b * h; block++) {
    out.set(source.subarray(block * s * d, block * s * d + length * d), block * length * d);
  }
  return makeTensor(tensor.type as 'float32', out, [b, h, length, d]);
}

/** [B, H, S, D] → [B, H, length, D] in the same buffer: each (batch, head) block moves down; a view is returned. */
function compactSequence(tensor: Tensor, length: number): Tensor {
  const [b, h, s, d] = tensor.dims;
  const data = tensor.data as Float32Array | Uint16Array;
  for (let block = 1; block < b * h; block++)
    data.copyWithin(block * length * d, block * s * d, block * s * d + length * d);
  return makeTensor(tensor.type as 'float32', data.subarray(0, b * h * length * d), [b, h, length, d]);
}

/** The last row of a [rows, cols] output. */
export function lastRow(output: StepOutput): Float32Array {
  return output.data.subarray((output.rows - 1) * output.cols, output.rows * output.cols);
}
