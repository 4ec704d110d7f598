/**
 * One onnxruntime run of the middle part for several device sessions, each on its own KV cache, with ragged past
 * lengths and row counts (measured in ../shared/docs/fleet-serving.md §1). Batch row b is session b:
 * - its past, truncated to the request's pastLength (the device's rollback), is copied into a padded frame of
 *   maxPast positions, and its new rows are padded on the right to the longest request;
 * - attention_mask is 0 on every padded position, position_ids are the session's own (past + i);
 * - its new cache is then the slice [start, start + past + rows) of its row of every present.*, copied into a buffer
 *   the session owns, so sessions never share a cache (the isolation invariant).
 * Layout 'left' ('padded' splits): every past ends at maxPast, where the new rows begin, so a causal mask built from
 * shapes (query i sits at maxPast + i) is right for every row. Layout 'right' ('single-row' splits, i.e.
 * GroupQueryAttention): GQA takes each row's length as Σmask − 1 and writes the new key there, so pasts start at 0.
 *
 * Copies per batched round: each session's past once into a reused batch buffer, and its present slice once into
 * its own reused buffer (grown with headroom). Padded KV slots are left as they are: the mask hides them, and a
 * reused buffer only ever holds finite cache values. Persistent batch buffers (no per-round gather) would remove the
 * first copy; that is issue 13's KV-memory step and needs the copy cost measured first.
 */
import { HatError } from '../../errors.ts';
import type { KvState, PartIO } from '../part-runner.ts';
import {
  declaredIntType,
  float32ToFloat16,
  intTensor,
  makeTensor,
  tensorToFloat32,
  type Feeds,
  type IntType,
  type ModelSession,
  type Tensor,
} from '../session.ts';

export type PastLayout = 'left' | 'right';

export interface BatchEntry {
  /** The session's cache; only its first pastLength positions are read. */
  state: KvState;
  pastLength: number;
  rows: number;
  /** [rows, hiddenSize] float32. */
  hidden: Float32Array;
}

export interface BatchEntryResult {
  /** [rows, cols] float32: every new position's output. */
  output: Float32Array;
  cols: number;
  /** The session's new cache, pastLength + rows long, in a buffer only this session holds. */
  state: KvState;
}

type KvArray = Float32Array | Uint16Array;

interface KvGeometry {
  type: 'float32' | 'float16';
  heads: number;
  headDim: number;
}

/** Buffers this module allocated for session caches: only these are overwritten in place on a later round. */
const ownedBuffers = new WeakSet<ArrayBufferLike>();

export class PaddedBatchRunner {
  private readonly session: ModelSession;
  private readonly io: PartIO;
  private readonly layout: PastLayout;
  private readonly hiddenType: string;
  private readonly intTypes = new Map<string, IntType>();
  private readonly kv = new Map<string, KvGeometry>();
  /** Reused feed buffers, one per input, grown as needed: the batch's inputs are rebuilt every round. */
  private readonly scratch = new Map<string, Float32Array | Uint16Array | Int32Array | BigInt64Array>();

  constructor(session: ModelSession, io: PartIO, layout: PastLayout) {
    this.session = session;
    this.io = io;
    this.layout = layout;
    const inputs = new Map(session.inputs.map((i) => [i.name, i]));
    if (!io.hiddenInput) throw new HatError('INTERNAL', 'a padded batch feeds hidden states: this part takes none');
    this.hiddenType = inputs.get(io.hiddenInput)?.type ?? 'float32';
    for (const info of session.inputs) this.intTypes.set(info.name, declaredIntType(info));
    for (const pair of io.kv) {
      for (const name of [pair.pastKey, pair.pastValue]) {
        const [, heads, , headDim] = inputs.get(name)?.shape ?? [];
        if (typeof heads !== 'number' || typeof headDim !== 'number') {
          throw new HatError('UNSUPPORTED_MODEL', `${session.label}: KV input '${name}' has symbolic heads or size`);
        }
        this.kv.set(name, { type: inputs.get(name)!.type === 'float16' ? 'float16' : 'float32', heads, headDim });
      }
    }
  }

  /**
   * One padded run. `copyMs` is the time spent outside onnxruntime assembling the batch (pasts gathered, feeds
   * built) and splitting it back (outputs sliced, each session's present copied into its own cache): the cost of
   * batching on top of the run itself.
   */
  async run(entries: readonly BatchEntry[]): Promise<{ results: BatchEntryResult[]; copyMs: number; runMs: number }> {
    const assembling = performance.now();
    // A cache's buffer is reused for its session's new cache, so two rows must not share one (new sessions all
    // start from the same empty cache, which owns no buffer).
    const held = entries.map((e) => e.state).filter((state) => state.length > 0);
    if (new Set(held).size !== held.length) throw new HatError('INTERNAL', 'one cache appears twice in a batch');
    const batch = entries.length;
    const maxPast = Math.max(...entries.map((e) => e.pastLength));
    const maxRows = Math.max(...entries.map((e) => e.rows));
    if (this.layout === 'right' && maxRows !== 1) {
      throw new HatError('INTERNAL', 'a right-padded batch holds one row per session');
    }
    const starts = entries.map((e) => (this.layout === 'left' ? maxPast - e.pastLength : 0));
    const width = maxPast + maxRows;
    const feeds: Feeds = {};
    for (const name of this.session.inputNames) {
      const intType = this.intTypes.get(name)!;
      if (name === this.io.hiddenInput) {
        feeds[name] = this.hiddenFeed(name, entries, maxRows);
      } else if (name === 'attention_mask') {
        const mask = this.intBuffer(name, batch * width);
        fillInt(mask, 0);
        entries.forEach((e, b) => {
          const first = b * width + starts[b];
          fillInt(mask, 1, first, first + e.pastLength + e.rows);
        });
        feeds[name] = intTensor(intType, mask, [batch, width]);
      } else if (name === 'position_ids') {
        // Padded rows get positions too (past + i): finite, and masked out of every real row's attention.
        const positions = this.intBuffer(name, batch * maxRows);
        for (let i = 0; i < positions.length; i++) {
          fillInt(positions, entries[Math.floor(i / maxRows)].pastLength + (i % maxRows), i, i + 1);
        }
        feeds[name] = intTensor(intType, positions, [batch, maxRows]);
      } else if (this.kv.has(name)) {
        feeds[name] = this.pastFeed(name, entries, starts, maxPast);
      } else {
        throw new HatError('UNSUPPORTED_MODEL', `${this.session.label} has an input '${name}' hat cannot feed`);
      }
    }
    const running = performance.now();
    const outputs = await this.session.run(feeds);
    const splitting = performance.now();
    const out = outputs[this.io.output];
    const cols = out.dims[out.dims.length - 1];
    const data = tensorToFloat32(out);
    const results = entries.map((entry, b) => {
      const tensors = new Map<string, Tensor>();
      for (const pair of this.io.kv) {
        tensors.set(pair.pastKey, this.present(outputs[pair.presentKey], pair.pastKey, entry, b, starts[b]));
        tensors.set(pair.pastValue, this.present(outputs[pair.presentValue], pair.pastValue, entry, b, starts[b]));
      }
      const output = data.slice(b * maxRows * cols, (b * maxRows + entry.rows) * cols);
      return { output, cols, state: { length: entry.pastLength + entry.rows, tensors } };
    });
    const done = performance.now();
    return { results, copyMs: running - assembling + (done - splitting), runMs: splitting - running };
  }

  /** [batch, maxRows, hidden]: each session's rows, zeros below them. */
  private hiddenFeed(name: string, entries: readonly BatchEntry[], maxRows: number): Tensor {
    const cols = entries[0].hidden.length / entries[0].rows;
    const type = this.hiddenType === 'float16' ? 'float16' : 'float32';
    const buffer = this.floatBuffer(name, type, entries.length * maxRows * cols);
    buffer.fill(0);
    entries.forEach((e, b) => {
      buffer.set(type === 'float16' ? float32ToFloat16(e.hidden) : e.hidden, b * maxRows * cols);
    });
    return makeTensor(type, buffer, [entries.length, maxRows, cols]);
  }

  /** [batch, heads, maxPast, headDim]: each session's first pastLength positions at its start. */
  private pastFeed(name: string, entries: readonly BatchEntry[], starts: number[], maxPast: number): Tensor {
    const { type, heads, headDim: d } = this.kv.get(name)!;
    const buffer = this.floatBuffer(name, type, entries.length * heads * maxPast * d);
    entries.forEach((entry, b) => {
      const source = entry.state.tensors.get(name)!;
      const stride = source.dims[2] * d;
      const from = source.data as KvArray;
      for (let h = 0; h < heads; h++) {
        const to = ((b * heads + h) * maxPast + starts[b]) * d;
        buffer.set(from.subarray(h * stride, h * stride + entry.pastLength * d), to);
      }
    });
    return makeTensor(type, buffer, [entries.length, heads, maxPast, d]);
  }

  /** Session b's slice of a present.* output, copied into a buffer it owns (its previous one when it fits). */
  private present(tensor: Tensor, pastName: string, entry: BatchEntry, b: number, start: number): Tensor {
    const { type, heads, headDim: d } = this.kv.get(pastName)!;
    const total = tensor.dims[2];
    const length = entry.pastLength + entry.rows;
    if (start + length > total) {
      const what = `${this.session.label}: the present of '${pastName}'`;
      throw new HatError('INTERNAL', `${what} holds ${total} positions, not ${start + length}`);
    }
    const size = heads * length * d;
    const previous = entry.state.tensors.get(pastName)?.data as KvArray | undefined;
    const fits =
      previous && ownedBuffers.has(previous.buffer) && previous.buffer.byteLength >= size * previous.BYTES_PER_ELEMENT;
    // Overwriting the previous cache is safe: it was copied into the batch's past feed before the run.
    // A new buffer gets headroom, so the session's next rounds reuse it instead of allocating.
    const buffer = fits ? previous.buffer : newKvArray(type, heads * d * (withHeadroom(length) + 16)).buffer;
    ownedBuffers.add(buffer);
    const target = type === 'float16' ? new Uint16Array(buffer, 0, size) : new Float32Array(buffer, 0, size);
    const source = tensor.data as KvArray;
    for (let h = 0; h < heads; h++) {
      const from = ((b * heads + h) * total + start) * d;
      target.set(source.subarray(from, from + length * d), h * length * d);
    }
    return makeTensor(type, target, [1, heads, length, d]);
  }

  private floatBuffer(name: string, type: 'float32' | 'float16', length: number): KvArray {
    let buffer = this.scratch.get(name) as KvArray | undefined;
    if (!buffer || buffer.length < length) {
      buffer = newKvArray(type, withHeadroom(length));
      this.scratch.set(name, buffer);
    }
    return buffer.subarray(0, length);
  }

  private intBuffer(name: string, length: number): Int32Array | BigInt64Array {
    let buffer = this.scratch.get(name) as Int32Array | BigInt64Array | undefined;
    if (!buffer || buffer.length < length) {
      const size = withHeadroom(length);
      buffer = this.intTypes.get(name) === 'int32' ? new Int32Array(size) : new BigInt64Array(size);
      this.scratch.set(name, buffer);
    }
    return buffer.subarray(0, length);
  }
}

/**
 * Buffers grow by a quarter more than asked: caches and batch pasts grow a few positions per round, so this
 * reallocates once in many rounds while holding little more than needed (a batch past can be large).
 */
function withHeadroom(length: number): number {
  return Math.ceil(length * 1.25);
}

function newKvArray(type: 'float32' | 'float16', length: number): KvArray {
  return type === 'float16' ? new Uint16Array(length) : new Float32Array(length);
}

function fillInt(array: Int32Array | BigInt64Array, value: number, start?: number, end?: number): void {
  if (array instanceof BigInt64Array) array.fill(BigInt(value), start, end);
  else array.fill(value, start, end);
}
