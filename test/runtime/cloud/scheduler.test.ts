/**
 * The batch scheduler on its own: budgets, one request per session, verifications first, prefill chunks never
 * padded with them and interleaved with them, and no request waiting for ever (a seeded simulation).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  afterRun,
  CHUNK_AGING_MS,
  classify,
  FIRST_TURN,
  MAX_MERGED_ROWS,
  MERGE_BUDGET_MS,
  mergedRowsFor,
  nextBatch,
  runPositions,
  type BatchLimits,
  type QueuedRequest,
  type RequestClass,
  type Turn,
} from '../../../src/runtime/cloud/scheduler.ts';
import { seededRandom } from '../../../src/random.ts';

const limits: BatchLimits = { maxBatch: 8, maxBatchTokens: 64, smallRows: 16, batchableRows: Infinity };
const q = (...pairs: Array<[number, number]>): QueuedRequest[] =>
  pairs.map(([sessionId, rows]) => ({ sessionId, rows }));
const sessionsOf = (queue: QueuedRequest[], indices: number[]) => indices.map((i) => queue[i].sessionId);
/** The turn after a small batch that took no time: chunks go next. */
const afterSmall: Turn = { previous: 'small', smallLeadMs: 0 };

test('an empty queue gives no batch; one request runs alone', () => {
  assert.equal(nextBatch([], limits), undefined);
  assert.deepEqual(nextBatch(q([1, 5]), limits), { indices: [0], kind: 'small', paddedRows: 5, contended: false });
});

test('padded rows stay within --max-batch-tokens and sessions within --max-batch', () => {
  // 7-row verifications: 9 × 7 = 63 ≤ 64 would fit the tokens, but --max-batch 8 stops at 8.
  const queue = q(...Array.from({ length: 12 }, (_, i) => [i + 1, 7] as [number, number]));
  const pick = nextBatch(queue, limits)!;
  assert.deepEqual(pick.indices, [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(pick.paddedRows, 56);
  // Padding counts: a 16-row request makes every row cost 16, so only four fit 64.
  const mixed = q([1, 2], [2, 16], [3, 1], [4, 3], [5, 2], [6, 1]);
  const padded = nextBatch(mixed, limits)!;
  assert.equal(padded.paddedRows, padded.indices.length * Math.max(...padded.indices.map((i) => mixed[i].rows)));
  assert.ok(padded.paddedRows <= 64, `${padded.paddedRows}`);
  assert.deepEqual(sessionsOf(mixed, padded.indices), [1, 2, 3, 4]);
  // First fit: what does not fit is skipped, smaller requests behind it still join.
  const skip = nextBatch(q([1, 4], [2, 16], [3, 4]), { ...limits, maxBatchTokens: 12 })!;
  assert.deepEqual(skip.indices, [0, 2]);
  // The oldest request always runs, alone if it is over the budget.
  assert.deepEqual(nextBatch(q([1, 100], [2, 100]), limits)!.indices, [0]);
  // --max-batch 1: one request per run, in arrival order.
  assert.deepEqual(nextBatch(q([1, 3], [2, 3]), { ...limits, maxBatch: 1 })!.indices, [0]);
});

test('a session gets at most one request per batch, its oldest, so its requests keep their order', () => {
  const queue = q([1, 3], [1, 2], [2, 4], [1, 1], [2, 2]);
  assert.deepEqual(nextBatch(queue, limits)!.indices, [0, 2]);
  // Its oldest request is a chunk: the session's later verification waits behind it, never overtakes it.
  const behind = q([1, 40], [1, 3], [2, 3]);
  const first = nextBatch(behind, limits)!;
  assert.deepEqual(sessionsOf(behind, first.indices), [2]);
  assert.equal(first.kind, 'small');
  assert.equal(first.contended, true);
  const second = nextBatch(
    behind.filter((_, i) => !first.indices.includes(i)),
    limits,
    afterSmall,
  )!;
  assert.deepEqual(second, { indices: [0], kind: 'chunk', paddedRows: 40, contended: false });
});

test('verifications go first and are never padded up to a prefill chunk', () => {
  const queue = q([1, 64], [2, 5], [3, 3], [4, 48], [5, 7]);
  const first = nextBatch(queue, limits)!;
  assert.equal(first.kind, 'small');
  assert.deepEqual(sessionsOf(queue, first.indices), [2, 3, 5]);
  assert.equal(first.paddedRows, 21);
  // Then the chunks, which batch with chunks of similar size (64 and 48) but not with verifications; the session
  // with fewer rows queued first.
  const rest = queue.filter((_, i) => !first.indices.includes(i));
  const second = nextBatch(rest, { ...limits, maxBatchTokens: 256 }, afterSmall)!;
  assert.equal(second.kind, 'chunk');
  assert.deepEqual(sessionsOf(rest, second.indices), [4, 1]);
  for (const pick of [first, second]) {
    const classes = new Set(pick.indices.map((i) => classify((pick === first ? queue : rest)[i].rows, limits)));
    assert.equal(classes.size, 1, 'one class per batch');
  }
  // A chunk under half the largest is not padded up to it (session 1's 64-row chunk, aged, goes first).
  const wide = { ...limits, maxBatchTokens: 1024 };
  const aged = [{ sessionId: 1, rows: 64, waitedMs: CHUNK_AGING_MS }, ...q([2, 24], [3, 40])];
  assert.deepEqual(nextBatch(aged, wide, afterSmall)!.indices, [0, 2]);
});

test('single-row splits batch one-row requests only; longer ones run alone', () => {
  const single = { ...limits, batchableRows: 1 };
  const queue = q([1, 1], [2, 4], [3, 1], [4, 1]);
  assert.deepEqual(nextBatch(queue, single)!.indices, [0, 2, 3]);
  assert.deepEqual(nextBatch(q([2, 4], [1, 1], [3, 1]), single)!.indices, [0]);
});

/** One request's life in a simulation: the step it arrived at and the batch that ran it. */
interface Served {
  request: QueuedRequest;
  arrivedAt: number;
  ranAt: number;
}

/**
 * A worker loop: each step runs one batch, which takes `costMs` (by default 1 ms per padded row); `arrive` adds
 * what finished requests' sessions send next.
 */
function simulate(
  initial: QueuedRequest[],
  steps: number,
  arrive: (done: QueuedRequest[]) => QueuedRequest[],
  costMs = (paddedRows: number) => paddedRows,
) {
  let queue = initial.map((request) => ({ request, arrivedAt: 0, arrivedMs: 0 }));
  let clockMs = 0;
  let turn = FIRST_TURN;
  const kinds: RequestClass[] = [];
  const costs: number[] = [];
  const served: Served[] = [];
  let batched = 0;
  for (let step = 0; step < steps && queue.length > 0; step++) {
    const pick = nextBatch(
      queue.map((q) => ({ ...q.request, waitedMs: clockMs - q.arrivedMs })),
      limits,
      turn,
    )!;
    const picked = pick.indices.map((i) => queue[i]);
    assert.equal(new Set(picked.map((p) => p.request.sessionId)).size, picked.length, 'one request per session');
    served.push(...picked.map((p) => ({ ...p, ranAt: step })));
    if (picked.length > 1) batched++;
    queue = queue.filter((_, i) => !pick.indices.includes(i));
    turn = afterRun(turn, pick, costMs(pick.paddedRows));
    kinds.push(pick.kind);
    costs.push(costMs(pick.paddedRows));
    clockMs += costMs(pick.paddedRows);
    const next = arrive(picked.map((p) => p.request));
    queue.push(...next.map((request) => ({ request, arrivedAt: step + 1, arrivedMs: clockMs })));
  }
  return { kinds, costs, served, batched, left: queue };
}

test('a long prompt delays verifications by at most one chunk batch, and its chunks keep going', () => {
  // Session 1 sends a 512-token prompt as eight 64-row chunks; sessions 2–5 verify back to back all along.
  const chunks = q(...Array.from({ length: 8 }, () => [1, 64] as [number, number]));
  const verifying = q([2, 5], [3, 7], [4, 2], [5, 6]);
  const resend = (done: QueuedRequest[]) => done.filter((r) => r.sessionId !== 1);
  const { kinds, served, left } = simulate([...chunks, ...verifying], 40, resend);
  const chunkRuns = served.filter((s) => s.request.sessionId === 1).map((s) => s.ranAt);
  assert.equal(chunkRuns.length, 8, 'every chunk ran');
  assert.ok(chunkRuns[7] < 17, `the prompt finished by batch ${chunkRuns[7]}`);
  assert.ok(left.every((q) => q.request.sessionId !== 1));
  for (const s of served.filter((s) => s.request.sessionId !== 1)) {
    const chunkBatches = kinds.slice(s.arrivedAt, s.ranAt).filter((k) => k === 'chunk').length;
    assert.ok(chunkBatches <= 1, `a verification waited behind ${chunkBatches} chunk batches`);
  }
});

test('chunks catch up on the time of a long verification batch before verifications run again', () => {
  // Session 1 sends a prompt as eight 24-row chunks; sessions 2–9 verify 7 rows back to back: one batch of them
  // (8 × 7 = 56 padded rows, 56 ms) takes as long as 2.3 chunks (24 ms each).
  const chunks = q(...Array.from({ length: 8 }, () => [1, 24] as [number, number]));
  const verifying = q(...Array.from({ length: 8 }, (_, i) => [i + 2, 7] as [number, number]));
  const resend = (done: QueuedRequest[]) => done.filter((r) => r.sessionId !== 1);
  const { kinds, costs, served } = simulate([...chunks, ...verifying], 12, resend);
  // Turns alone would give one chunk per verification batch; time gives the prompt three (72 ms ≥ 56 ms).
  assert.deepEqual(kinds.slice(0, 6), ['small', 'chunk', 'chunk', 'chunk', 'small', 'chunk']);
  // Verifications wait at most their own last batch's time plus one chunk.
  for (const s of served.filter((s) => s.request.sessionId !== 1)) {
    const chunkMs = kinds
      .map((kind, step) => (kind === 'chunk' && step >= s.arrivedAt && step < s.ranAt ? costs[step] : 0))
      .reduce((a, b) => a + b, 0);
    assert.ok(chunkMs <= 56 + 24, `a verification waited behind ${chunkMs} ms of chunks`);
  }
});

test('no session starves: under random closed-loop load every request runs within a bounded number of batches', () => {
  const random = seededRandom(13);
  // 30 % prefill chunks of 17–216 rows, the rest verifications of 1–7 rows.
  const size = () =>
    random.uniform() < 0.3 ? 17 + Math.floor(random.uniform() * 200) : 1 + Math.floor(random.uniform() * 7);
  const sessions = 24;
  const initial = Array.from({ length: sessions }, (_, i) => ({ sessionId: i + 1, rows: size() }));
  // Like devices: each session sends its next request when the previous one returns.
  const next = (done: QueuedRequest[]) => done.map((r) => ({ sessionId: r.sessionId, rows: size() }));
  const { served, batched, left, kinds } = simulate(initial, 3000, next);
  assert.equal(served.length > 3000, true);
  assert.ok(batched > 1000, `${batched} batches held more than one request`);
  // The oldest request of a class runs in that class's next batch, which comes at least every other batch, so a
  // request waits for at most one batch per session ahead of it in its class, twice over: 2 × 24.
  // Requests still queued at the end count too: a starved one never runs.
  const worst = Math.max(...served.map((s) => s.ranAt - s.arrivedAt), ...left.map((q) => kinds.length - q.arrivedAt));
  assert.ok(worst <= 2 * sessions, `a request waited ${worst} batches`);
});

test('shortest prompt first: the chunk of the session with the fewest rows queued runs first, until chunks age', () => {
  const chunk = (sessionId: number, past: number, rows: number, waitedMs = 0): QueuedRequest => ({
    sessionId,
    rows,
    past,
    waitedMs,
  });
  // Session 1, an 896-token prompt, has six 128-row chunks queued; session 2's 128-token prompt arrives behind them.
  const long = Array.from({ length: 6 }, (_, i) => chunk(1, 128 * i, 128, 100));
  const solo = { ...limits, maxBatch: 1, maxBatchTokens: 512 };
  const pick = nextBatch([...long, chunk(2, 0, 64, 5), chunk(2, 64, 64, 5)], solo)!;
  assert.deepEqual(pick.indices, [6], "session 2's first chunk (128 rows queued against 768)");
  // Ties go to the older request; a chunk that has waited CHUNK_AGING_MS goes before any fresher one, oldest first.
  assert.deepEqual(nextBatch([chunk(1, 0, 64, 10), chunk(2, 0, 64, 20)], solo)!.indices, [0]);
  const agedLong = long.map((c, i) => (i === 0 ? { ...c, waitedMs: CHUNK_AGING_MS } : c));
  assert.deepEqual(nextBatch([...agedLong, chunk(2, 0, 64, 5)], solo)!.indices, [0]);
  const twoAged = [chunk(3, 0, 64), chunk(1, 0, 300, 2 * CHUNK_AGING_MS), chunk(2, 0, 200, CHUNK_AGING_MS)];
  assert.deepEqual(nextBatch(twoAged, solo)!.indices, [1], 'aged ones in queue order, before fresh ones');
});

test('shortest prompt first counts the rows a device says its prompt has left, never fewer than it has queued', () => {
  const chunk = (sessionId: number, past: number, rows: number, promptRows?: number): QueuedRequest => ({
    sessionId,
    rows,
    past,
    waitedMs: 10,
    ...(promptRows ? { promptRows } : {}),
  });
  const solo = { ...limits, maxBatch: 1, maxBatchTokens: 512 };
  // Session 1's 896-token prompt has sent only its first chunk; session 2's 384-token prompt has all three queued.
  // By queued rows session 1 looks nearer its first token (128 against 384); by what its device said it is not.
  const mid = [chunk(2, 0, 128, 384), chunk(2, 128, 128, 256), chunk(2, 256, 128, 128)];
  assert.deepEqual(nextBatch([chunk(1, 0, 128, 896), ...mid], solo)!.indices, [1]);
  // A device that does not say is ranked by its queued rows, as before.
  assert.deepEqual(nextBatch([chunk(1, 0, 128), ...mid], solo)!.indices, [0]);
  // Understating does not help: session 3 says 10 rows left but has 384 queued; session 2's 300 go first.
  const under = [chunk(3, 0, 128, 10), chunk(3, 128, 128, 10), chunk(3, 256, 128, 10)];
  assert.deepEqual(nextBatch([...under, chunk(2, 0, 300, 300)], solo)!.indices, [3]);
});

test('a request joins a batch only while real past positions fill at least half of the padded pasts', () => {
  const withPast = (...triples: Array<[number, number, number]>): QueuedRequest[] =>
    triples.map(([sessionId, rows, past]) => ({ sessionId, rows, past }));
  // One session deep into a long prompt, fifteen short ones: padding all to 960 would be mostly padding.
  const queue = withPast(
    [1, 1, 960],
    ...Array.from({ length: 15 }, (_, i) => [i + 2, 1, 100] as [number, number, number]),
  );
  const wide = { ...limits, maxBatch: 16, maxBatchTokens: 1024 };
  const pick = nextBatch(queue, wide)!;
  const frame = pick.indices.length * 960;
  const real = pick.indices.reduce((n, i) => n + queue[i].past!, 0);
  assert.ok(real >= 0.5 * frame, `real ${real} of ${frame} padded past positions`);
  assert.ok(pick.indices.length > 1 && pick.indices.length < 16, `${pick.indices.length} sessions`);
  // The short ones left behind batch together at their own length.
  const rest = queue.filter((_, i) => !pick.indices.includes(i));
  assert.equal(nextBatch(rest, wide)!.indices.length, rest.length);
  // Similar pasts all batch; a request without a past counts as 0.
  assert.equal(nextBatch(withPast([1, 5, 500], [2, 5, 300], [3, 5, 700]), wide)!.indices.length, 3);
  assert.deepEqual(nextBatch(q([1, 5], [2, 5]), wide)!.indices, [0, 1]);
});

test("an earlier padded run's sessions, all queued again, run together when no larger batch would run", () => {
  const group = { id: 7, size: 3 };
  const three = { maxBatch: 3, maxBatchTokens: 64, smallRows: 16, batchableRows: Infinity };
  // Oldest first: 1 (group), 4 (none), 2 and 3 (group). Oldest-first filling would take 1, 4, 2.
  const queue: QueuedRequest[] = [
    { sessionId: 1, rows: 2, group },
    { sessionId: 4, rows: 2 },
    { sessionId: 2, rows: 3, group },
    { sessionId: 3, rows: 1, group },
  ];
  const repeat = nextBatch(queue, three)!;
  assert.deepEqual(sessionsOf(queue, repeat.indices), [1, 2, 3]);
  assert.equal(repeat.paddedRows, 9);
  // A larger batch wins: with room for four, everyone runs.
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, { ...three, maxBatch: 4 })!.indices), [1, 4, 2, 3]);
  // A member missing (3 not queued): oldest first again.
  const partial = queue.slice(0, 3);
  assert.deepEqual(sessionsOf(partial, nextBatch(partial, three)!.indices), [1, 4, 2]);
  // Over the token budget together (3 × 3 rows > 8): oldest first, 2 left out for its rows.
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, { ...three, maxBatchTokens: 8 })!.indices), [1, 4, 3]);
  // Only the oldest request's group counts, and a session's later request is not its head.
  const behind: QueuedRequest[] = [{ sessionId: 4, rows: 2 }, ...queue];
  assert.deepEqual(sessionsOf(behind, nextBatch(behind, three)!.indices), [4, 1, 2]);
});

test("a batch's gathered pasts and presents stay within the cache positions its worker has free", () => {
  const withPast = (...triples: Array<[number, number, number]>): QueuedRequest[] =>
    triples.map(([sessionId, rows, past]) => ({ sessionId, rows, past }));
  const four = withPast([1, 2, 100], [2, 2, 100], [3, 2, 100], [4, 2, 100]);
  // Each session gathers 100 positions and gets presents of 102: 202 a session.
  assert.equal(runPositions(1, 100, 2, false), 202);
  assert.equal(runPositions(1, 100, 2, true), 102);
  const pick = nextBatch(four, { ...limits, maxRunPositions: 500 })!;
  assert.deepEqual(pick.indices, [0, 1], 'two fit 500 positions (404), three would not (606)');
  assert.equal(pick.kvRefused, 2);
  // Nothing free: the first request still runs, alone (admission counted its cache); unbounded: all four.
  assert.deepEqual(nextBatch(four, { ...limits, maxRunPositions: 0 })!.indices, [0]);
  assert.deepEqual(nextBatch(four, limits)!.indices, [0, 1, 2, 3]);
  assert.equal(nextBatch(four, limits)!.kvRefused, undefined);
  // A repeated group fed in place allocates only its presents, so it fits where a gathered one would not.
  const group = { id: 3, size: 2, width: 100 };
  const repeat = four.slice(0, 2).map((r) => ({ ...r, group }));
  const inPlace = { ...limits, inPlace: true, maxRunPositions: 300 };
  assert.deepEqual(nextBatch(repeat, inPlace)!.indices, [0, 1], 'in place: 2 × 102 positions');
  assert.deepEqual(nextBatch(repeat, { ...inPlace, inPlace: false })!.indices, [0], 'gathered: 2 × 202 positions');
});

test('--min-batch: a gathered verification batch of fewer sessions runs its first request alone', () => {
  const three = { ...limits, minBatch: 3 };
  // Two verifications: below the minimum, the oldest runs alone (padded to its own rows only), the other next.
  const pair = q([1, 5], [2, 2]);
  const alone = nextBatch(pair, three)!;
  assert.deepEqual(alone.indices, [0]);
  assert.equal(alone.paddedRows, 5);
  assert.deepEqual(nextBatch(pair.slice(1), three)!.indices, [0]);
  // Three or more batch as before.
  assert.deepEqual(nextBatch(q([1, 5], [2, 2], [3, 1]), three)!.indices, [0, 1, 2]);
  // The default (2) batches a pair.
  assert.deepEqual(nextBatch(pair, limits)!.indices, [0, 1]);
  // Prefill chunks are not held to it: two similar chunks still batch.
  const chunks = nextBatch(q([1, 100], [2, 90]), { ...three, maxBatchTokens: 256 })!;
  assert.equal(chunks.kind, 'chunk');
  assert.deepEqual([...chunks.indices].sort(), [0, 1]);
  // A repeated pair fed in place (no gather) runs together whatever the minimum: the split allows it and the pasts
  // fill at least MIN_IN_PLACE_FILL of the presents (30 of 2 × 20 positions).
  const group = { id: 3, size: 2, width: 20 };
  const repeated = (pasts: [number, number], g: QueuedRequest['group'] = group): QueuedRequest[] => [
    { sessionId: 1, rows: 2, past: pasts[0], group: g },
    { sessionId: 2, rows: 3, past: pasts[1], group: g },
  ];
  const inPlace = { ...three, inPlace: true };
  assert.deepEqual(sessionsOf(repeated([15, 15]), nextBatch(repeated([15, 15]), inPlace)!.indices), [1, 2]);
  // A repeat the engine would gather after all is held to the minimum like any gathered batch: its pasts fill too
  // little of the presents (20 of 40, rolled back), the split forbids feeding them back, or the width is unknown.
  assert.deepEqual(nextBatch(repeated([10, 10]), inPlace)!.indices, [0]);
  assert.deepEqual(nextBatch(repeated([15, 15]), three)!.indices, [0]);
  assert.deepEqual(nextBatch(repeated([15, 15], { id: 3, size: 2 }), inPlace)!.indices, [0]);
  // With the default minimum such a repeat still runs together.
  assert.deepEqual(sessionsOf(repeated([10, 10]), nextBatch(repeated([10, 10]), limits)!.indices), [1, 2]);
});

test('a repeat is priced as fed in place only when it will be', () => {
  const group = { id: 3, size: 2, width: 20 };
  const queue: QueuedRequest[] = [
    { sessionId: 1, rows: 1, past: 15, group },
    { sessionId: 2, rows: 1, past: 15, group },
  ];
  const seen: boolean[] = [];
  const cost = (shape: { sessions: number; inPlace?: boolean }) => {
    if (shape.sessions > 1) seen.push(shape.inPlace === true);
    return 1;
  };
  // The repeat is priced last in a pick (after the joins, which are gathered batches).
  nextBatch(queue, { ...limits, inPlace: true }, FIRST_TURN, cost);
  assert.equal(seen.at(-1), true);
  nextBatch(queue, limits, FIRST_TURN, cost);
  assert.equal(seen.at(-1), false);
});

test('with a run-cost estimate a request joins only where batching pays', () => {
  // Per run 2 ms shared, per session 1 ms, per padded cache position 0.01 ms (padding included).
  const cost = (perRunMs: number) => (shape: { sessions: number; rows: number; past: number }) =>
    perRunMs + shape.sessions * (1 + 0.01 * (shape.past + shape.rows));
  const queue: QueuedRequest[] = [
    { sessionId: 1, rows: 5, past: 100 },
    { sessionId: 2, rows: 5, past: 120 },
    { sessionId: 3, rows: 5, past: 900 },
    { sessionId: 4, rows: 5, past: 110 },
  ];
  const all = { ...limits, maxBatchTokens: 1024 };
  // Without an estimate (or while it is unknown) everything the limits allow joins; the past-fill rule keeps 3 out.
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, all)!.indices), [1, 2, 4]);
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, all, FIRST_TURN, () => undefined)!.indices), [1, 2, 4]);
  // Sharing 2 ms pays for short pasts; padding 100 positions to 900 would cost 8 ms more than it saves.
  const relaxed = queue.map((r) => ({ ...r, past: r.sessionId === 3 ? 200 : r.past }));
  assert.deepEqual(sessionsOf(relaxed, nextBatch(relaxed, all, FIRST_TURN, cost(2))!.indices), [1, 2, 3, 4]);
  const far = queue.map((r) => ({ ...r, past: r.sessionId === 3 ? 240 : r.past }));
  assert.deepEqual(sessionsOf(far, nextBatch(far, all, FIRST_TURN, cost(0.5))!.indices), [1, 2, 4]);
  // Nothing shared per run: every session runs alone.
  assert.deepEqual(nextBatch(queue, all, FIRST_TURN, cost(0))!.indices, [0]);
  // What the cost rule kept out is counted (serve-cloud's hat_cloud_cost_refused_joins_total): beside session 1 alone,
  // 2, 3 and 4 each fit every other limit (3's past fills half of the pair's padded pasts). With cost(0.5), only 3 is
  // refused for cost. Nothing refused, nothing counted.
  assert.equal(nextBatch(queue, all, FIRST_TURN, cost(0))!.costRefused, 3);
  assert.equal(nextBatch(far, all, FIRST_TURN, cost(0.5))!.costRefused, 1);
  assert.equal(nextBatch(queue, all)!.costRefused, undefined);
});

test('a repeated group runs together only if that is predicted to cost no more than its separate runs', () => {
  const group = { id: 3, size: 2 };
  const queue: QueuedRequest[] = [
    { sessionId: 1, rows: 1, past: 10, group },
    { sessionId: 9, rows: 1, past: 1000 },
    { sessionId: 2, rows: 1, past: 10, group },
  ];
  const two = { ...limits, maxBatch: 2 };
  const sharing = () => 1; // every run 1 ms, whatever it holds
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, two, FIRST_TURN, sharing)!.indices), [1, 2]);
  const perSession = (shape: { sessions: number }) => shape.sessions * 1.1 - 0.05;
  assert.deepEqual(sessionsOf(queue, nextBatch(queue, two, FIRST_TURN, perSession)!.indices), [1]);
});

test("a lone chunk takes its session's next queued chunks, within MAX_MERGED_ROWS, batching on only", () => {
  const chunk = (sessionId: number, past: number, rows: number): QueuedRequest => ({ sessionId, rows, past });
  // Session 1's prompt: chunks at 0, 40, 80 and a 5-row tail at 120 (small by rows: still the prompt's next chunk).
  const queue = [chunk(1, 0, 40), chunk(2, 0, 200), chunk(1, 40, 40), chunk(1, 80, 40), chunk(1, 120, 5)];
  const pick = nextBatch(queue, limits)!;
  assert.equal(pick.kind, 'chunk');
  assert.deepEqual(pick.indices, [0]);
  assert.deepEqual(pick.follow, [2, 3, 4]);
  assert.equal(pick.paddedRows, 125);
  // Not contiguous (the device rolled back), another session's request in between does not matter.
  assert.equal(nextBatch([chunk(1, 0, 40), chunk(1, 30, 40)], limits)!.follow, undefined);
  // The cap: 40 + 200 fits 256, a further 40 does not.
  assert.deepEqual(nextBatch([chunk(1, 0, 40), chunk(1, 40, 200), chunk(1, 240, 40)], limits)!.follow, [1]);
  assert.equal(MAX_MERGED_ROWS, 256);
  // --max-batch 1 keeps one request per run; a chunk batched with another session's chunk takes no followers.
  assert.equal(nextBatch(queue, { ...limits, maxBatch: 1 })!.follow, undefined);
  const two = nextBatch([chunk(1, 0, 30), chunk(2, 0, 30), chunk(1, 30, 30)], limits)!;
  assert.deepEqual(two.indices, [1, 0], 'session 2, fewer rows queued, first');
  assert.equal(two.follow, undefined);
  // A verification picked as small never takes followers.
  assert.equal(nextBatch([chunk(1, 0, 3), chunk(1, 3, 40)], limits)!.follow, undefined);
});

test('the merge cap follows what rows cost: as many as fit MERGE_BUDGET_MS, at most MAX_MERGED_ROWS', () => {
  assert.equal(MERGE_BUDGET_MS, 64);
  assert.equal(mergedRowsFor(undefined), MAX_MERGED_ROWS, 'no probe: the row cap alone');
  assert.equal(mergedRowsFor(0.13), MAX_MERGED_ROWS, "the default split's rows: 256 fit in 33 ms");
  assert.equal(mergedRowsFor(0.5), 128);
  assert.equal(mergedRowsFor(8.9), 7, 'the Qwen2.5-0.5B shape: no second chunk joins');
  const chunk = (past: number, rows: number): QueuedRequest => ({ sessionId: 1, rows, past });
  const prompt = [chunk(0, 96), chunk(96, 96), chunk(192, 96)];
  assert.deepEqual(nextBatch(prompt, { ...limits, mergedRows: 200 })!.follow, [1], '96 + 96 fit 200, + 96 not');
  assert.deepEqual(nextBatch(prompt, { ...limits, mergedRows: 288 })!.follow, [1, 2]);
  const alone = nextBatch(prompt, { ...limits, mergedRows: mergedRowsFor(8.9) })!;
  assert.deepEqual([alone.indices, alone.follow, alone.paddedRows], [[0], undefined, 96], 'the head chunk runs alone');
});
