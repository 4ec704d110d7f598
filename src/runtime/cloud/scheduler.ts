/**
 * Which queued requests a free middle worker runs next as ONE onnxruntime run — continuous batching in the spirit
 * of vLLM v1's scheduler: no fill timer, whatever is queued when the worker frees up is considered. Pure: the worker
 * pool keeps the queues, this module only picks (see ../shared/docs/fleet-serving.md §1 for the measurements).
 *
 * - Small requests (verification rounds and one-token steps, ≤ `smallRows` rows) are on every device's critical
 *   path and go first. Requests are classed by rows, not by the frame's all-positions flag: the device also sets
 *   that flag on prefill chunks when its output part keeps a cache.
 * - Prefill chunks are never padded together with small requests (one 256-row chunk + eight 5-row verifications as
 *   one padded batch took 7.7× the chunk alone). A chunk runs alone or with chunks of similar size (the smallest at
 *   least half the largest). While both classes wait they take turns (`Turn`): a chunk batch after every small
 *   batch, and further chunk batches until chunks have had as much compute time as the small batches they waited
 *   behind. Turns alone starved prompts once verifications batched: one small batch of several verifications takes
 *   several times a single one, so prompts got a third of the worker instead of two thirds, and hat's prompt chunks
 *   waited 627 ms on average against 71 ms with `--max-batch 1` (fleet bench, default model, 4 sessions/s). So a
 *   prompt delays verifications by at most one chunk batch beyond the time verifications themselves just had, and
 *   verifications cannot hold a prompt back for ever.
 * - Past lengths: a padded batch attends over and copies every session's past padded to the longest one, so a
 *   request joins only while the real past positions fill at least half of the padded pasts (MIN_PAST_FILL): one
 *   session deep into a long prompt does not make fifteen short ones pay for its length.
 * - Limits: at most `maxBatch` sessions per run, and padded rows (sessions × the largest row count) at most
 *   `maxBatchTokens`; the first request of the chosen class (see below) always runs, alone if it is over the budget.
 *   A gathered batch of small requests needs `minBatch` sessions (--min-batch; default 2, any): a batch interleaved
 *   with solo runs slows them by streaming memory that they then read again (a padded batch of 2–4 sessions between
 *   solo runs of the default split slowed them 1.21–1.33×), and on a small middle part a pair saves less than that.
 * - KV memory: a request joins only while the run's gathered pasts and presents (runPositions) fit the cache positions
 *   its worker's share of --kv-memory has free beside the caches it holds (`maxRunPositions`): admission counts each
 *   session's cache at full context, not the copies a padded run makes of it. With memory to spare this never binds;
 *   with little, batches shrink to solo runs, which allocate only their own presents.
 * - Repeats: when every session of the padded run that last computed the oldest small request's session is queued
 *   again, and no larger batch would run instead, exactly those sessions run — the worker then feeds that run's
 *   presents back in place instead of gathering every past (padded-batch.ts).
 * - Cost: with a run-cost estimate (run-cost.ts, learnt from the worker's own runs), a request joins only if the
 *   batch with it is predicted to cost no more than the batch without it plus its own run, and a repeated group
 *   runs only if it costs no more than its sessions' separate runs: batching where it pays, not by default. Without
 *   an estimate (too few runs seen yet) every request that fits the limits joins.
 * - Consecutive chunks: a prefill chunk that runs alone takes with it the session's next queued chunks that continue
 *   it (up to `mergedRows` rows: MAX_MERGED_ROWS, fewer on a part whose rows cost more, see mergedRowsFor; batching
 *   on only), as one request of their rows together. The device uploads a long prompt's chunks faster than a busy
 *   cloud computes them; one at a time, each waited for its own chunk turn behind other sessions' verifications (an
 *   896-token prompt was ~18 chunks when this was written, 8–10 now), which is what made hat's TTFT grow under load.
 * - Shortest prompt first: among prefill chunks, the session whose prompt has the fewest rows left goes first (its
 *   prompt is nearest its first token). Mean TTFT is what it minimises: first come, first served made a 128-token
 *   prompt wait behind every queued chunk of an 896-token one. The rows left are what the device says with the chunk
 *   (promptRows), or, from a device that does not say, the session's queued rows; never fewer than those, so a device
 *   cannot jump the queue by understating. Queued rows alone ranked a long prompt as short until its later chunks
 *   arrived: on EMULATED wifi an 896-token prompt takes ~90–180 ms to upload, as long as chunks queue at 4 sessions/s.
 *   A chunk that has waited CHUNK_AGING_MS goes before every fresher one, oldest first, so a long prompt is never
 *   overtaken for longer than that.
 * - Fairness: at most one request per session per run — its oldest, so a session's requests keep their order.
 *   Small requests are taken oldest first: the oldest runs in the next small batch, which comes after finitely many
 *   chunk batches (as many as fit in the last small batch's time, plus one). Chunks: once the oldest has waited
 *   CHUNK_AGING_MS it runs in the next chunk batch, which comes after at most one small batch; so none starves.
 */

import type { RunShape } from './run-cost.ts';

/** Predicted ms of one run of a shape, or undefined while unknown. */
export type RunCost = (shape: RunShape) => number | undefined;

export interface QueuedRequest {
  sessionId: number;
  /** New positions this request appends (hidden-state rows). */
  rows: number;
  /** Cached positions it attends over (its pastLength); absent counts as 0. */
  past?: number;
  /** The padded run that last computed the session's cache. */
  group?: RunGroup;
  /** How long it has been queued, ms; absent counts as 0 (it never ages). */
  waitedMs?: number;
  /** A prefill chunk: the rows its prompt has left from it on, as its device said (promptRows); absent: unknown. */
  promptRows?: number;
}

/** A padded run whose presents its sessions' caches are views of: its batch rows and the presents' width. */
export interface RunGroup {
  id: number;
  size: number;
  /** Positions per row of its presents; absent: unknown (its sessions are then not counted as fed in place). */
  width?: number;
}

export type RequestClass = 'small' | 'chunk';

export interface BatchLimits {
  /** Sessions per run; 1 turns batching off. */
  maxBatch: number;
  /** Padded rows per run: sessions × the largest request's rows. */
  maxBatchTokens: number;
  /** Requests of at most this many rows are small (verifications); larger ones are prefill chunks. */
  smallRows: number;
  /** Requests of more rows than this always run alone (1 on 'single-row' splits, Infinity on 'padded' ones). */
  batchableRows: number;
  /** Rows a lone chunk and the queued chunks continuing it may add up to (mergedRowsFor); absent: MAX_MERGED_ROWS. */
  mergedRows?: number;
  /**
   * Sessions a batch of small requests that gathers its pasts must hold; with fewer, the first runs alone (a repeated
   * group fed in place is exempt: it copies nothing). Absent or 2: any batch runs.
   */
  minBatch?: number;
  /** The split lets a repeated group's presents be fed back as its pasts (manifest `batching.inPlace`). */
  inPlace?: boolean;
  /**
   * Cache positions a padded run may allocate beside the caches its worker holds: its sessions' pasts gathered at
   * the longest one (unless fed in place) and its presents, each sessions × (that past + the longest request's rows).
   * The worker's free share of --kv-memory; absent: any. A request alone always runs (admission counted its cache).
   */
  maxRunPositions?: number;
}

export interface BatchPick {
  /** Indices into the queue: first the request the batch formed around, then those that joined it. */
  indices: number[];
  kind: RequestClass;
  /** What the run computes: sessions × the largest row count. */
  paddedRows: number;
  /** Both classes were waiting when this batch was picked (its time then counts in the turn). */
  contended: boolean;
  /** A lone chunk's session's next chunks, oldest first, to run with it as one request (the rows follow on). */
  follow?: number[];
  /** Requests that fit every limit of this batch but the cost rule kept out (predicted dearer together). */
  costRefused?: number;
  /** Requests that fit the batch's other limits but not the cache positions its worker has free (maxRunPositions). */
  kvRefused?: number;
  /** Set by the worker pool where the scheduler asked the cost rule about a join or a repeat: did it answer. */
  costRule?: 'answered' | 'silent';
}

/** Whose turn it is when small requests and chunks both wait; a worker keeps one, updated by `afterRun`. */
export interface Turn {
  /** The class of the batch the worker ran last. */
  previous?: RequestClass;
  /** Compute time small batches have had beyond chunk batches while both waited (never below 0), ms. */
  smallLeadMs: number;
}

export const FIRST_TURN: Turn = { smallLeadMs: 0 };

/** The turn after running `pick` for `computeMs`. */
export function afterRun(turn: Turn, pick: BatchPick, computeMs: number): Turn {
  if (!pick.contended) return { previous: pick.kind, smallLeadMs: 0 };
  const lead = turn.smallLeadMs + (pick.kind === 'small' ? computeMs : -computeMs);
  return { previous: pick.kind, smallLeadMs: Math.max(0, lead) };
}

/**
 * A verification round holds at most --max-draft (6 by default) drafts + 1 row. 8 keeps such rounds and one-token
 * steps in one class (keeping 1–3 apart from 4–7-row requests gained only 0–16 % in the doc's measurements) and
 * leaves prefill chunks, usually longer, out.
 */
export const DEFAULT_SMALL_ROWS = 8;

/**
 * Rows a lone chunk and the chunks that continue it may add up to. Merging saves turns and per-run overhead, but
 * verifications that arrive during a merged run wait for all of it. 128 rows suited devices that opened every
 * prompt with 64-token probes (then 256 rows doubled verifications' queue wait at 6 sessions/s). Since a device keeps
 * its chunk planner across sessions its chunks are 96–196 rows on the default split, and 128 merged almost none: an
 * 896-token prompt's 8–10 chunks each queued for a turn of their own behind the verifications that go first (fleet
 * bench at 2/s, batching on, 6e195bd: hat's prompt chunks queued 94.5 ms on average, u-shape's whole prompts 58.8).
 * At 256, one set of recordings replayed six times per cap, alternating (2/s, batching on), hat's prompt chunks
 * queued 58 ms on average against 99 (medians), its mean TTFT was 224 ms against 278 (0.74× u-shape's against
 * 0.87×), and verifications waited no longer (16.3 ms against 18.3; hat's TBT 27.9 ms against 30.4).
 */
export const MAX_MERGED_ROWS = 256;

/**
 * The longest a merged run of a prompt's chunks may be predicted to take, ms: a verification that arrives during it
 * waits for all of it. The default split's 256-row runs cost about 33–48 ms (0.13–0.19 ms per row in serve-cloud's
 * knee probe at 128 rows), well within it; on the Qwen2.5-0.5B shape (8.9 ms per row at 128 rows) a second chunk
 * would hold every verification queued behind it for another second, so there a chunk runs on its own.
 */
export const MERGE_BUDGET_MS = 64;

/**
 * Rows a merged run may hold on a part whose rows cost `msPerRow` at best (the knee probe's cheapest): as many as fit
 * MERGE_BUDGET_MS, at most MAX_MERGED_ROWS; MAX_MERGED_ROWS where the cost is unknown.
 */
export function mergedRowsFor(msPerRow: number | undefined): number {
  if (msPerRow === undefined || !(msPerRow > 0)) return MAX_MERGED_ROWS;
  return Math.min(MAX_MERGED_ROWS, Math.floor(MERGE_BUDGET_MS / msPerRow));
}

/**
 * A prefill chunk queued this long goes before every fresher chunk, whatever its session's queued rows: a long
 * prompt is held back by shorter ones for about this long at most. Near saturation (default model, 4 sessions/s,
 * batched) hat's mean TTFT was 299, 293 and 305 ms in three runs with 1 s, against 495, 497 and 306 ms with 250 ms
 * (most chunks aged and went first come, first served again) and 961, 368 and 579 ms first come, first served.
 */
export const CHUNK_AGING_MS = 1000;

/** Real past positions (summed over the batch's sessions) per padded past position, at least. */
export const MIN_PAST_FILL = 0.5;

/**
 * Real past positions per padded one, at least, for a batch's presents to be fed back in place. A hole costs the
 * run about three passes over it (concatenated into the presents, read by attention for keys and values) where a
 * gather costs two (read, write) once per real position, so in place pays down to about 0.6; 0.75 keeps a margin
 * for the attention compute holes add.
 */
export const MIN_IN_PLACE_FILL = 0.75;

/**
 * Whether pasts of `realPast` positions in all fill enough of presents of `batch` rows × `width` positions to be fed
 * back in place: the rule the engine applies (padded-batch.ts), so the scheduler knows which repeats it applies to.
 */
export function fillsForInPlace(realPast: number, batch: number, width: number): boolean {
  return realPast >= MIN_IN_PLACE_FILL * batch * width;
}

export function classify(rows: number, limits: Pick<BatchLimits, 'smallRows'>): RequestClass {
  return rows <= limits.smallRows ? 'small' : 'chunk';
}

/**
 * The next batch from a FIFO queue (index 0 = oldest), or undefined when it is empty. `turn` decides which class
 * goes when both wait.
 */
export function nextBatch(
  queue: readonly QueuedRequest[],
  limits: BatchLimits,
  turn: Turn = FIRST_TURN,
  cost?: RunCost,
): BatchPick | undefined {
  // Each session's oldest request, in queue order: the only one of that session that may run now.
  const seen = new Set<number>();
  const heads: number[] = [];
  queue.forEach((request, index) => {
    if (seen.has(request.sessionId)) return;
    seen.add(request.sessionId);
    heads.push(index);
  });
  if (heads.length === 0) return undefined;
  const small = heads.filter((i) => classify(queue[i].rows, limits) === 'small');
  const chunks = heads.filter((i) => classify(queue[i].rows, limits) === 'chunk');
  const contended = small.length > 0 && chunks.length > 0;
  const chunksTurn = turn.previous === 'small' || turn.smallLeadMs > 0;
  const kind: RequestClass = small.length === 0 || (contended && chunksTurn) ? 'chunk' : 'small';
  const [first, ...rest] = kind === 'small' ? small : chunkOrder(queue, chunks);
  const indices = [first];
  let maxRows = queue[first].rows;
  let minRows = maxRows;
  let maxPast = queue[first].past ?? 0;
  let realPast = maxPast;
  let costRefused = 0;
  let kvRefused = 0;
  if (maxRows <= limits.batchableRows) {
    for (const index of rest) {
      if (indices.length >= limits.maxBatch) break;
      const { rows, past = 0 } = queue[index];
      if (rows > limits.batchableRows) continue;
      const max = Math.max(maxRows, rows);
      const min = Math.min(minRows, rows);
      if (kind === 'chunk' && 2 * min < max) continue;
      if ((indices.length + 1) * max > limits.maxBatchTokens) continue;
      const paddedPast = Math.max(maxPast, past);
      if (realPast + past < MIN_PAST_FILL * (indices.length + 1) * paddedPast) continue;
      if (runPositions(indices.length + 1, paddedPast, max, false) > (limits.maxRunPositions ?? Infinity)) {
        kvRefused++;
        continue;
      }
      const without = { sessions: indices.length, rows: maxRows, past: maxPast, pastSum: realPast };
      const joined = { sessions: indices.length + 1, rows: max, past: paddedPast, pastSum: realPast + past };
      if (!pays(cost, joined, [without, { sessions: 1, rows, past, pastSum: past }])) {
        costRefused++;
        continue;
      }
      indices.push(index);
      maxRows = max;
      minRows = min;
      maxPast = paddedPast;
      realPast += past;
    }
  }
  if (kind === 'small' && indices.length > 1 && indices.length < (limits.minBatch ?? 2)) {
    indices.splice(1);
    maxRows = queue[first].rows;
  }
  const repeat = kind === 'small' ? repeatedGroup(queue, small, limits) : undefined;
  // A repeat that will be gathered after all (its pasts fill too little of the presents, or the split forbids feeding
  // them back) is a gathered batch like any other: --min-batch holds for it.
  const allowed = repeat && (repeat.inPlace || repeat.indices.length >= (limits.minBatch ?? 2));
  if (allowed && repeat.indices.length >= indices.length && repeatPays(queue, repeat, cost)) {
    return { indices: repeat.indices, paddedRows: repeat.paddedRows, kind, contended };
  }
  const merge =
    kind === 'chunk' && indices.length === 1 && limits.maxBatch > 1
      ? following(queue, first, limits.mergedRows ?? MAX_MERGED_ROWS)
      : undefined;
  const refused = { ...(costRefused ? { costRefused } : {}), ...(kvRefused ? { kvRefused } : {}) };
  if (merge?.follow.length) {
    return { indices, kind, paddedRows: merge.rows, contended, follow: merge.follow, ...refused };
  }
  return { indices, kind, paddedRows: indices.length * maxRows, contended, ...refused };
}

/**
 * Chunk heads in the order they are considered: those queued CHUNK_AGING_MS or longer first, oldest first; then the
 * others by the rows their prompt has left (the device's word, at least the session's queued rows), fewest first,
 * ties oldest first.
 */
function chunkOrder(queue: readonly QueuedRequest[], heads: readonly number[]): number[] {
  const queuedRows = new Map<number, number>();
  for (const { sessionId, rows } of queue) queuedRows.set(sessionId, (queuedRows.get(sessionId) ?? 0) + rows);
  const aged = (i: number) => (queue[i].waitedMs ?? 0) >= CHUNK_AGING_MS;
  const remaining = (i: number) => Math.max(queuedRows.get(queue[i].sessionId)!, queue[i].promptRows ?? 0);
  const fresh = heads.filter((i) => !aged(i)).sort((a, b) => remaining(a) - remaining(b) || a - b);
  return [...heads.filter(aged), ...fresh];
}

/**
 * The queued chunks of `head`'s session that continue it position by position, within `cap` rows with `head`, and
 * the rows of `head` and them together.
 */
function following(queue: readonly QueuedRequest[], head: number, cap: number): { follow: number[]; rows: number } {
  const { sessionId } = queue[head];
  const follow: number[] = [];
  let end = (queue[head].past ?? 0) + queue[head].rows;
  let rows = queue[head].rows;
  for (let i = head + 1; i < queue.length; i++) {
    const next = queue[i];
    if (next.sessionId !== sessionId) continue;
    // Only the prompt's next chunk can continue a chunk (a verification needs the prompt's answer first); its last
    // chunk may be short enough to count as small.
    if (next.past !== end || rows + next.rows > cap) break;
    follow.push(i);
    end += next.rows;
    rows += next.rows;
  }
  return { follow, rows };
}

/** Whether one run of `together` is predicted to cost no more than the runs of `apart`; true while unknown. */
function pays(cost: RunCost | undefined, together: RunShape, apart: RunShape[]): boolean {
  const predicted = cost?.(together);
  const separate = apart.map((shape) => cost?.(shape));
  if (predicted === undefined || separate.some((ms) => ms === undefined)) return true;
  return predicted <= separate.reduce((sum: number, ms) => sum + ms!, 0);
}

function repeatPays(queue: readonly QueuedRequest[], repeat: RepeatedGroup, cost: RunCost | undefined): boolean {
  const requests = repeat.indices.map((i) => ({ rows: queue[i].rows, past: queue[i].past ?? 0 }));
  const together = {
    inPlace: repeat.inPlace,
    sessions: requests.length,
    rows: Math.max(...requests.map((r) => r.rows)),
    past: Math.max(...requests.map((r) => r.past)),
    pastSum: requests.reduce((n, r) => n + r.past, 0),
  };
  return pays(
    cost,
    together,
    requests.map((r) => ({ sessions: 1, ...r })),
  );
}

interface RepeatedGroup {
  indices: number[];
  paddedRows: number;
  /** The engine will feed the group's presents back as its pasts (padded-batch.ts inPlaceOrder). */
  inPlace: boolean;
}

/**
 * The sessions of the run that last computed the oldest small request's session, when every one of them has a small
 * request queued (at the head of its session) and they fit the limits together.
 */
function repeatedGroup(
  queue: readonly QueuedRequest[],
  smallHeads: readonly number[],
  limits: BatchLimits,
): RepeatedGroup | undefined {
  const group = queue[smallHeads[0]].group;
  if (!group || group.size > limits.maxBatch) return undefined;
  const indices = smallHeads.filter((i) => queue[i].group?.id === group.id);
  if (indices.length !== group.size) return undefined;
  const maxRows = Math.max(...indices.map((i) => queue[i].rows));
  if (maxRows > limits.batchableRows || indices.length * maxRows > limits.maxBatchTokens) return undefined;
  const realPast = indices.reduce((n, i) => n + (queue[i].past ?? 0), 0);
  const inPlace =
    limits.inPlace === true && group.width !== undefined && fillsForInPlace(realPast, group.size, group.width);
  const past = inPlace ? group.width! : Math.max(...indices.map((i) => queue[i].past ?? 0));
  if (runPositions(indices.length, past, maxRows, inPlace) > (limits.maxRunPositions ?? Infinity)) return undefined;
  return { indices, paddedRows: indices.length * maxRows, inPlace };
}

/**
 * Cache positions a padded run of `sessions` allocates: presents of `past` + `rows` positions each, and unless its
 * pasts are fed in place, those pasts gathered at `past` positions each. Until the run ends the caches it read stay
 * held too, so a batch of sessions deep in their context can briefly need up to three times their caches.
 */
export function runPositions(sessions: number, past: number, rows: number, inPlace: boolean): number {
  return sessions * ((inPlace ? 1 : 2) * past + rows);
}
