/**
 * One onnxruntime run of the middle part for several device sessions, each on its own KV cache, with ragged past
 * lengths and row counts (measured in ../shared/docs/fleet-serving.md §1). Batch row b is session b:
 * - its past, truncated to the request's pastLength (the device's rollback), is copied into a padded frame of
 *   maxPast positions (the longest past, rounded up by `bucketed`), and its new rows are padded on the right to the
 *   longest request;
 * - attention_mask is 0 on every padded position, position_ids are the session's own (past + i);
 * - its new cache is its positions in its row of every present.*: a PresentView into the run's outputs, which
 *   nothing writes again (the isolation invariant: a session reads only its own row).
 * Layout 'left' ('padded' splits): every past ends at maxPast, where the new rows begin, so a causal mask built from
 * shapes (query i sits at maxPast + i) is right for every row. Layout 'right' ('single-row' splits, i.e.
 * GroupQueryAttention): GQA takes each row's length as Σmask − 1 and writes the new key there, so pasts start at 0.
 *
 * Copies per batched round: each session's past once, into a reused batch buffer. The presents are not copied
 * back: a session keeps a view into the batch's outputs until its next round reads it (session-caches.ts copies
 * it out only when too little of that batch is still in use). Padded KV slots are left as they are: the mask
 * hides them, and a reused buffer only ever holds finite cache values.
 *
 * No copy at all when the same sessions batch again (every row of one run's presents, in any order, as a busy
 * fleet's saturated rounds often are): the presents are fed back as the pasts where they lie. A row then carries
 * holes — positions its session rolled back (rejected drafts) or never had (padded rows) — which the mask hides
 * like left padding, so a view is a list of spans. Each such round widens the pasts by the longest request while a
 * session keeps only what it commits, so pasts are fed in place only while real positions fill at least
 * MIN_IN_PLACE_FILL of them (scheduler.ts); below that the next round gathers them (which closes the holes).
 */
import { HatError } from '../../errors.ts';
import type { KvState, PartIO } from '../part-runner.ts';
import { fillsForInPlace } from './scheduler.ts';
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

/** Positions [start, start + length) of a batch row. */
export interface Span {
  start: number;
  length: number;
}

/** One session's cache inside a shared present: `length` positions of batch row `row`, in order along `spans`. */
export interface PresentView {
  shared: SharedPresent;
  row: number;
  spans: readonly Span[];
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
  private readonly inPlace: boolean;
  private readonly hiddenType: string;
  private readonly intTypes = new Map<string, IntType>();
  private readonly kv = new Map<string, KvGeometry>();
  /** Reused feed buffers, one per input, grown as needed: the batch's inputs are rebuilt every round. */
  private readonly scratch = new Map<string, Float32Array | Uint16Array | Int32Array | BigInt64Array>();

  /** `inPlace`: the split allows feeding a batch's presents back as pasts (manifest `batching.inPlace`). */
  constructor(session: ModelSession, io: PartIO, layout: PastLayout, options: { inPlace: boolean }) {
    this.session = session;
    this.io = io;
    this.layout = layout;
    this.inPlace = options.inPlace;
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
   * top of the run itself. `inPlace`: the pasts were the previous run's presents, fed as they lie (no gather).
   */
  async run(
    entries: readonly BatchEntry[],
  ): Promise<{ results: BatchEntryResult[]; copyMs: number; runMs: number; inPlace: boolean }> {
    const assembling = performance.now();
    const inPlaceOrder = this.inPlaceOrder(entries);
    // Batch row b runs entries[order[b]]: in place, each session keeps the row it had.
    const order = inPlaceOrder ?? entries.map((_, i) => i);
    const rows = order.map((i) => entries[i]);
    const batch = rows.length;
    const maxRows = Math.max(...rows.map((e) => e.rows));
    if (this.layout === 'right' && maxRows !== 1) {
      throw new HatError('INTERNAL', 'a right-padded batch holds one row per session');
    }
    const shared = inPlaceOrder ? (rows[0].state as PresentView).shared : undefined;
    const pastWidth = shared?.width ?? bucketed(Math.max(...rows.map((e) => e.pastLength)));
    // Where each session's past lies in its row of the past feed, and where its new rows go.
    const pasts = rows.map((e): Span[] =>
      shared
        ? leading((e.state as PresentView).spans, e.pastLength)
        : spansOf(this.layout === 'left' ? pastWidth - e.pastLength : 0, e.pastLength),
    );
    const newStarts = rows.map((e) => (this.layout === 'left' ? pastWidth : e.pastLength));
    const width = pastWidth + maxRows;
    const feeds: Feeds = {};
    for (const name of this.session.inputNames) {
      const intType = this.intTypes.get(name)!;
      if (name === this.io.hiddenInput) {
        feeds[name] = this.hiddenFeed(name, rows, maxRows);
      } else if (name === 'attention_mask') {
        const mask = this.intBuffer(name, batch * width);
        fillInt(mask, 0);
        rows.forEach((e, b) => {
          for (const span of [...pasts[b], { start: newStarts[b], length: e.rows }]) {
            fillInt(mask, 1, b * width + span.start, b * width + span.start + span.length);
          }
        });
        feeds[name] = intTensor(intType, mask, [batch, width]);
      } else if (name === 'position_ids') {
        // Padded rows get positions too (past + i): finite, and masked out of every real row's attention.
        const positions = this.intBuffer(name, batch * maxRows);
        for (let i = 0; i < positions.length; i++) {
          fillInt(positions, rows[Math.floor(i / maxRows)].pastLength + (i % maxRows), i, i + 1);
        }
        feeds[name] = intTensor(intType, positions, [batch, maxRows]);
      } else if (this.kv.has(name)) {
        feeds[name] = shared ? shared.tensors.get(name)! : this.pastFeed(name, rows, pasts, pastWidth);
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
    const spans = rows.map((e, b) => [...pasts[b], ...spansOf(newStarts[b], e.rows)]);
    const present = this.sharedPresent(outputs, batch, spans);
    const results: BatchEntryResult[] = new Array(batch);
    rows.forEach((entry, b) => {
      const output = data.slice(b * maxRows * cols, (b * maxRows + entry.rows) * cols);
      const state = { shared: present, row: b, spans: merged(spans[b]), length: entry.pastLength + entry.rows };
      results[order[b]] = { output, cols, state };
    });
    const done = performance.now();
    return {
      results,
      copyMs: running - assembling + (done - splitting),
      runMs: splitting - running,
      inPlace: shared !== undefined,
    };
  }

  /**
   * When `entries` are every row of one run's presents (each session's cache a view into them, in any order) and
   * their real pasts fill enough of those presents (fillsForInPlace): which entry each batch row runs.
   */
  private inPlaceOrder(entries: readonly BatchEntry[]): number[] | undefined {
    const first = entries[0].state;
    if (!this.inPlace || !isView(first) || entries.length !== first.shared.batch) return undefined;
    const { shared } = first;
    const order: number[] = [];
    let real = 0;
    for (const [i, entry] of entries.entries()) {
      const { state } = entry;
      if (!isView(state) || state.shared !== shared || order[state.row] !== undefined) return undefined;
      order[state.row] = i;
      real += entry.pastLength;
    }
    return fillsForInPlace(real, shared.batch, shared.width) ? order : undefined;
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

  /** [batch, heads, maxPast, headDim]: each session's first pastLength positions gathered where `pasts` says. */
  private pastFeed(name: string, entries: readonly BatchEntry[], pasts: Span[][], maxPast: number): Tensor {
    const { type, heads, headDim: d } = this.kv.get(name)!;
    const buffer = this.floatBuffer(name, type, entries.length * heads * maxPast * d);
    entries.forEach((entry, b) => {
      const start = pasts[b][0]?.start ?? 0;
      copyHeads(entry.state, name, entry.pastLength, buffer, (b * heads * maxPast + start) * d, maxPast * d);
    });
    return makeTensor(type, buffer, [entries.length, heads, maxPast, d]);
  }

  /** The run's presents, checked to hold every session's new cache. */
  private sharedPresent(outputs: Feeds, batch: number, spans: Span[][]): SharedPresent {
    const tensors = new Map<string, Tensor>();
    for (const pair of this.io.kv) {
      tensors.set(pair.pastKey, outputs[pair.presentKey]);
      tensors.set(pair.pastValue, outputs[pair.presentValue]);
    }
    const width = outputs[this.io.kv[0].presentKey].dims[2];
    const longest = Math.max(...spans.flat().map((span) => span.start + span.length));
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

/**
 * A cache's spans for one KV input, in the tensor that holds it: head h's position p lies at
 * base + h × headStride + p × headDim.
 */
function headsOf(
  source: KvSource,
  name: string,
): { data: KvArray; base: number; headStride: number; heads: number; headDim: number; spans: readonly Span[] } {
  const tensor = isView(source) ? source.shared.tensors.get(name)! : source.tensors.get(name)!;
  const [, heads, positions, headDim] = tensor.dims;
  const headStride = positions * headDim;
  const base = isView(source) ? source.row * heads * headStride : 0;
  const spans = isView(source) ? source.spans : spansOf(0, source.length);
  return { data: tensor.data as KvArray, base, headStride, heads, headDim, spans };
}

/**
 * The first `length` positions of every head of a cache's KV input `name`, copied contiguously into `target`:
 * head h's go to targetFirst + h × targetHeadStride.
 */
function copyHeads(
  source: KvSource,
  name: string,
  length: number,
  target: KvArray,
  targetFirst: number,
  targetHeadStride: number,
): void {
  const { data, base, headStride, heads, headDim, spans } = headsOf(source, name);
  for (let h = 0; h < heads; h++) {
    let to = targetFirst + h * targetHeadStride;
    for (const span of leading(spans, length)) {
      const from = base + h * headStride + span.start * headDim;
      target.set(data.subarray(from, from + span.length * headDim), to);
      to += span.length * headDim;
    }
  }
}

/**
 * A gathered past's width: the longest past rounded up to a multiple of 1/16 of its power of two (≤ 6.25 % more
 * masked positions), so growing pasts repeat a shape for many rounds. onnxruntime's first run at a never-seen shape
 * is slow: a 16 × 1,024 one-row batch of a Qwen2.5-0.5B-shaped middle took 1.5–1.9 s per run when its past grew by
 * one position every run, against 0.2–0.3 s cycling over three widths (2 cores, both after warm-up).
 */
export function bucketed(past: number): number {
  const step = Math.max(1, 2 ** Math.floor(Math.log2(Math.max(1, past))) / 16);
  return Math.ceil(past / step) * step;
}

/** [start, start + length) as spans (none when empty). */
function spansOf(start: number, length: number): Span[] {
  return length > 0 ? [{ start, length }] : [];
}

/** The spans that hold the first `length` positions along `spans`. */
function leading(spans: readonly Span[], length: number): Span[] {
  const taken: Span[] = [];
  for (const span of spans) {
    if (length <= 0) break;
    taken.push({ start: span.start, length: Math.min(span.length, length) });
    length -= span.length;
  }
  return taken;
}

/** Adjacent spans joined: a gathered past and its new rows are one span. */
function merged(spans: readonly Span[]): Span[] {
  const joined: Span[] = [];
  for (const span of spans) {
    const last = joined[joined.length - 1];
    if (last && last.start + last.length === span.start)
      joined[joined.length - 1] = { ...last, length: last.length + span.length };
    else joined.push(span);
  }
  return joined;
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
