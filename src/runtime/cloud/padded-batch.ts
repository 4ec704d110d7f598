/**
 * One onnxruntime run of the middle part for several device sessions, each on its own KV cache, with ragged past
 * lengths and row counts (measured in ../shared/docs/fleet-serving.md §1). Batch row b is session b:
 * - its past, truncated to the request's pastLength (the device's rollback), is copied into a padded frame of
 *   maxPast positions, and its new rows are padded on the right to the longest request;
 * - attention_mask is 0 on every padded position, position_ids are the session's own (past + i);
 * - its new cache is the slice [start, start + past + rows) of its row of every present.*: a PresentView into the
 *   run's outputs, which nothing writes again (the isolation invariant: a session reads only its own row).
 * Layout 'left' ('padded' splits): every past ends at maxPast, where the new rows begin, so a causal mask built from
 * shapes (query i sits at maxPast + i) is right for every row. Layout 'right' ('single-row' splits, i.e.
 * GroupQueryAttention): GQA takes each row's length as Σmask − 1 and writes the new key there, so pasts start at 0.
 *
 * Copies per batched round: each session's past once, into a reused batch buffer. The presents are not copied
 * back: a session keeps a view into the batch's outputs until its next round reads it (session-caches.ts copies
 * it out only when too little of that batch is still in use). Padded KV slots are left as they are: the mask
 * hides them, and a reused buffer only ever holds finite cache values.
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

/** A padded run's present.* outputs, [batch, heads, width, headDim] each, keyed by their past.* input's name. */
export interface SharedPresent {
  tensors: Map<string, Tensor>;
  batch: number;
  width: number;
}

/** One session's cache inside a shared present: positions [start, start + length) of batch row `row`. */
export interface PresentView {
  shared: SharedPresent;
  row: number;
  start: number;
  length: number;
}

/** A session's cache: a contiguous state of its own, or its row of a batch's presents. */
export type KvSource = KvState | PresentView;

export function isView(source: KvSource): source is PresentView {
  return 'shared' in source;
}

export interface BatchEntry {
  /** The session's cache; only its first pastLength positions are read. */
  state: KvSource;
  pastLength: number;
  rows: number;
  /** [rows, hiddenSize] float32. */
  hidden: Float32Array;
}

export interface BatchEntryResult {
  /** [rows, cols] float32: every new position's output. */
  output: Float32Array;
  cols: number;
  /** The session's new cache, pastLength + rows long: its row of the run's presents. */
  state: PresentView;
}

type KvArray = Float32Array | Uint16Array;

interface KvGeometry {
  type: 'float32' | 'float16';
  heads: number;
  headDim: number;
}

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
   * built) and splitting it back (outputs sliced; the presents become views, not copies): the cost of batching on
   * top of the run itself.
   */
  async run(entries: readonly BatchEntry[]): Promise<{ results: BatchEntryResult[]; copyMs: number; runMs: number }> {
    const assembling = performance.now();
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
    const shared = this.sharedPresent(outputs, batch, starts, entries);
    const results = entries.map((entry, b) => {
      const output = data.slice(b * maxRows * cols, (b * maxRows + entry.rows) * cols);
      return { output, cols, state: { shared, row: b, start: starts[b], length: entry.pastLength + entry.rows } };
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
      copyHeads(entry.state, name, entry.pastLength, buffer, (b * heads * maxPast + starts[b]) * d, maxPast * d);
    });
    return makeTensor(type, buffer, [entries.length, heads, maxPast, d]);
  }

  /** The run's presents, checked to hold every session's new cache. */
  private sharedPresent(
    outputs: Feeds,
    batch: number,
    starts: number[],
    entries: readonly BatchEntry[],
  ): SharedPresent {
    const tensors = new Map<string, Tensor>();
    for (const pair of this.io.kv) {
      tensors.set(pair.pastKey, outputs[pair.presentKey]);
      tensors.set(pair.pastValue, outputs[pair.presentValue]);
    }
    const width = outputs[this.io.kv[0].presentKey].dims[2];
    const longest = Math.max(...entries.map((e, b) => starts[b] + e.pastLength + e.rows));
    for (const [name, tensor] of tensors) {
      const { heads, headDim } = this.kv.get(name)!;
      const expected = [batch, heads, width, headDim];
      if (longest > width || tensor.dims.some((n, i) => n !== expected[i])) {
        throw new HatError(
          'INTERNAL',
          `${this.session.label}: the present for '${name}' is [${tensor.dims}], ` +
            `not [${expected}] with ${longest} positions`,
        );
      }
    }
    return { tensors, batch, width };
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

/** Where a cache's heads lie for one KV input: head h's positions start at first + h × headStride. */
function headsOf(
  source: KvSource,
  name: string,
): { data: KvArray; first: number; headStride: number; heads: number; headDim: number } {
  const tensor = isView(source) ? source.shared.tensors.get(name)! : source.tensors.get(name)!;
  const [, heads, positions, headDim] = tensor.dims;
  const headStride = positions * headDim;
  const first = isView(source) ? source.row * heads * headStride + source.start * headDim : 0;
  return { data: tensor.data as KvArray, first, headStride, heads, headDim };
}

/**
 * The first `length` positions of every head of a cache's KV input `name`, copied into `target`: head h's go to
 * targetFirst + h × targetHeadStride.
 */
function copyHeads(
  source: KvSource,
  name: string,
  length: number,
  target: KvArray,
  targetFirst: number,
  targetHeadStride: number,
): void {
  const { data, first, headStride, heads, headDim } = headsOf(source, name);
  for (let h = 0; h < heads; h++) {
    const from = first + h * headStride;
    target.set(data.subarray(from, from + length * headDim), targetFirst + h * targetHeadStride);
  }
}

/** A view's first `length` positions copied into a contiguous cache of their own ([1, heads, length, headDim]). */
export function materialize(view: PresentView, length = view.length): KvState {
  const tensors = new Map<string, Tensor>();
  for (const [name, present] of view.shared.tensors) {
    const [, heads, , d] = present.dims;
    const type = present.type === 'float16' ? 'float16' : 'float32';
    const target = newKvArray(type, heads * length * d);
    copyHeads(view, name, length, target, 0, length * d);
    tensors.set(name, makeTensor(type, target, [1, heads, length, d]));
  }
  return { length, tensors };
}

function newKvArray(type: 'float32' | 'float16', length: number): KvArray {
  return type === 'float16' ? new Uint16Array(length) : new Float32Array(length);
}

function fillInt(array: Int32Array | BigInt64Array, value: number, start?: number, end?: number): void {
  if (array instanceof BigInt64Array) array.fill(BigInt(value), start, end);
  else array.fill(value, start, end);
}
