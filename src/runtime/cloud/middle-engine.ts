/**
 * What a middle worker does with a batch the scheduler picked: check each request against its session's cache,
 * run one request directly on the part (as before batching existed) or several as one padded run
 * (padded-batch.ts), and keep every session's new cache (session-caches.ts). No threads here, so tests drive it
 * in-process.
 */
import { HatError } from '../../errors.ts';
import { PartRunner, type KvState, type PartIO } from '../part-runner.ts';
import type { ModelSession } from '../session.ts';
import type { MiddleRequest } from './executor.ts';
import { PaddedBatchRunner, type KvSource, type PastLayout } from './padded-batch.ts';
import { SessionCaches } from './session-caches.ts';
import { codeOf, type ErrorCode } from '../../errors.ts';

export type EngineResult =
  | { sessionId: number; ok: true; hidden: Float32Array; rows: number }
  | { sessionId: number; ok: false; code: ErrorCode; message: string };

export interface EngineRun {
  /** In request order. */
  results: EngineResult[];
  /** Time inside onnxruntime for the whole batch. */
  computeMs: number;
  /** Rows the run computed: sessions × the largest row count, or the sum of rows of requests run one by one. */
  paddedRows: number;
  /**
   * Of computeMs, the time spent gathering pasts and splitting outputs back for a padded run, copying caches out
   * of batches too little used to keep, and copying a cache out of a batch's presents for a solo run (0 when none
   * of these happened).
   */
  copyMs: number;
  /** The padded run fed the previous run's presents back as its pasts (no gather; padded-batch.ts). */
  inPlace: boolean;
  /** Why a padded run failed (its requests then ran one by one). */
  batchError?: string;
  /**
   * The padded run, when one ran: the sessions it ran (those it answered keep a view of its presents as their cache),
   * and the presents' batch rows and width — what the scheduler needs to know whether those sessions could be fed in
   * place if they batch again.
   */
  padded?: PaddedRun;
  /** Cache positions the worker holds after the run (SessionCaches.heldPositions): the pool bounds batches by it. */
  heldPositions?: number;
}

export interface PaddedRun {
  sessions: number[];
  batch: number;
  width: number;
}

export class MiddleEngine {
  private readonly runner: PartRunner;
  private readonly batcher?: PaddedBatchRunner;
  private readonly maxContext: number;
  private readonly empty: KvState;
  private readonly caches = new SessionCaches();
  private readonly maxHeldPositions: number;
  /** Sessions in the run being awaited, and those dropped meanwhile: their new caches must not be stored. */
  private readonly running = new Set<number>();
  private readonly droppedWhileRunning = new Set<number>();

  /**
   * `layout` undefined: the split cannot batch, so several requests run one after another. `inPlace`: the split
   * lets a batch's presents be fed back as the same sessions' next pasts (manifest `batching.inPlace`).
   * `maxHeldPositions`: this worker's share of --kv-memory, in cache positions; while its caches and the batch
   * presents kept for views hold more, every view is copied out after each run, so the worker holds what its sessions
   * need (which admission kept within --kv-memory) rather than up to twice that.
   */
  constructor(
    session: ModelSession,
    io: PartIO,
    options: { maxContext: number; layout?: PastLayout; inPlace?: boolean; maxHeldPositions?: number },
  ) {
    this.runner = PartRunner.fromSession(session, io);
    this.batcher = options.layout
      ? new PaddedBatchRunner(session, io, options.layout, { inPlace: options.inPlace ?? false })
      : undefined;
    this.maxContext = options.maxContext;
    this.maxHeldPositions = options.maxHeldPositions ?? Infinity;
    this.empty = this.runner.snapshot();
  }

  /** A session's cache as it stands, contiguous (a view is copied); undefined for one never seen or dropped. */
  cacheOf(sessionId: number): KvState | undefined {
    return this.caches.stateOf(sessionId);
  }

  /** Batches' presents kept alive as sessions' caches. */
  get sharedPresents(): number {
    return this.caches.sharedCount;
  }

  /** One run of `rows` zero hidden states on an empty cache, kept nowhere: its ms (serve-cloud's knee probe). */
  async timeRows(rows: number, hiddenSize: number): Promise<number> {
    this.runner.restore(this.empty);
    const started = performance.now();
    await this.runner.step({ hidden: new Float32Array(rows * hiddenSize) }, rows);
    const ms = performance.now() - started;
    this.runner.restore(this.empty);
    return ms;
  }

  drop(sessionId: number): void {
    this.caches.delete(sessionId);
    if (this.running.has(sessionId)) this.droppedWhileRunning.add(sessionId);
    // Its rows may have been most of a batch's presents that other sessions still view: copy those out now rather
    // than at the next run, which an idle worker may never get (admission already counts this session's memory free).
    else if (this.running.size === 0) this.caches.compact();
  }

  async run(requests: readonly MiddleRequest[]): Promise<EngineRun> {
    if (new Set(requests.map((r) => r.sessionId)).size !== requests.length) {
      throw new HatError('INTERNAL', 'a batch holds at most one request per session');
    }
    const results = new Map<number, EngineResult>();
    const valid = requests.filter((request) => {
      const problem = this.check(request);
      if (problem) results.set(request.sessionId, { sessionId: request.sessionId, ok: false, ...problem });
      return !problem;
    });
    for (const request of valid) this.running.add(request.sessionId);
    const started = performance.now();
    let paddedRows = 0;
    const batched = valid.length > 1 && this.batcher !== undefined;
    let batchError: string | undefined;
    let copyMs = 0;
    let inPlace = false;
    let padded: PaddedRun | undefined;
    try {
      if (batched) {
        const outcome = await this.runBatch(valid, results);
        if (typeof outcome === 'string') batchError = outcome;
        else ({ copyMs, inPlace, padded } = outcome);
      }
      if (batched && batchError === undefined) {
        paddedRows = valid.length * Math.max(...valid.map((r) => r.nTokens));
      } else {
        for (const request of valid) {
          const alone = await this.runAlone(request);
          results.set(request.sessionId, alone.result);
          copyMs += alone.copyMs;
          paddedRows += request.nTokens;
        }
      }
    } finally {
      this.running.clear();
      this.droppedWhileRunning.clear();
    }
    const compacting = performance.now();
    const overBudget = this.caches.heldPositions > this.maxHeldPositions;
    if (this.caches.compact(overBudget ? Infinity : undefined) > 0) copyMs += performance.now() - compacting;
    const computeMs = performance.now() - started;
    const ordered = requests.map((r) => results.get(r.sessionId)!);
    const heldPositions = this.caches.heldPositions;
    return {
      results: ordered,
      computeMs,
      paddedRows,
      copyMs,
      inPlace,
      batchError,
      heldPositions,
      ...(padded ? { padded } : {}),
    };
  }

  private check(request: MiddleRequest): { code: ErrorCode; message: string } | undefined {
    const length = this.caches.lengthOf(request.sessionId);
    if (request.pastLength > length) {
      return {
        code: 'BAD_FRAME',
        message: `past length ${request.pastLength} is beyond the session's cache of ${length} positions`,
      };
    }
    if (request.pastLength + request.nTokens > this.maxContext) {
      return {
        code: 'CONTEXT_LIMIT',
        message: `the session would exceed the server's context limit of ${this.maxContext} positions`,
      };
    }
    return undefined;
  }

  /** One padded run; on failure its message, and each request then runs alone, so only a bad one fails. */
  private async runBatch(
    requests: readonly MiddleRequest[],
    results: Map<number, EngineResult>,
  ): Promise<string | { copyMs: number; inPlace: boolean; padded: PaddedRun }> {
    const entries = requests.map((r) => ({
      state: this.caches.get(r.sessionId) ?? this.empty,
      pastLength: r.pastLength,
      rows: r.nTokens,
      hidden: r.hidden,
    }));
    let batch;
    try {
      batch = await this.batcher!.run(entries);
    } catch (error) {
      return (error as Error).message;
    }
    requests.forEach((request, i) => {
      const { output, cols, state } = batch.results[i];
      if (!allFinite(output)) return results.set(request.sessionId, this.poisoned(request.sessionId));
      this.store(request.sessionId, state);
      results.set(request.sessionId, answer(request, output, cols));
    });
    const { batch: rows, width } = batch.results[0].state.shared;
    const sessions = requests.map((r) => r.sessionId);
    return { copyMs: batch.copyMs, inPlace: batch.inPlace, padded: { sessions, batch: rows, width } };
  }

  /**
   * Exactly the path every request took before batching: restore, roll back, step, keep the cache. A cache that is
   * still a view into a batch's presents is copied out first; that copy is batching's cost, so it is `copyMs`.
   */
  private async runAlone(request: MiddleRequest): Promise<{ result: EngineResult; copyMs: number }> {
    let copyMs = 0;
    let rolledBack = false;
    try {
      const copying = performance.now();
      const state = this.caches.stateOf(request.sessionId, request.pastLength);
      if (this.caches.isView(request.sessionId)) copyMs = performance.now() - copying;
      this.runner.restore(state ?? this.empty);
      this.runner.truncate(request.pastLength);
      rolledBack = request.pastLength < (state?.length ?? 0);
      const output = await this.runner.step({ hidden: request.hidden }, request.nTokens);
      if (!allFinite(output.data)) return { result: this.poisoned(request.sessionId), copyMs };
      this.store(request.sessionId, this.runner.snapshot({ exclusive: true }));
      return { result: answer(request, output.data, output.cols), copyMs };
    } catch (error) {
      // A rollback compacts the session's own cache in place, so the one stored is spent: keep the rolled-back one
      // (the failed run appended nothing), so that one failed request does not break the session for good.
      if (rolledBack) this.store(request.sessionId, this.runner.snapshot({ exclusive: true }));
      const message = (error as Error).message;
      return {
        result: { sessionId: request.sessionId, ok: false, code: codeOf(error, 'RUN_FAILED'), message },
        copyMs,
      };
    }
  }

  /**
   * A run that gave this session non-finite values (its cache now holds them too): the session fails and its cache
   * is dropped. Kept, such a cache could reach other sessions: its past is copied into the reused batch buffer, whose
   * stale slots later batches read as masked left padding — and a NaN stays NaN under an additive mask.
   */
  private poisoned(sessionId: number): EngineResult {
    this.caches.delete(sessionId);
    return {
      sessionId,
      ok: false,
      code: 'RUN_FAILED',
      message: "the middle part gave non-finite values for this session's hidden states; its cache is dropped",
    };
  }

  private store(sessionId: number, state: KvSource): void {
    if (!this.droppedWhileRunning.has(sessionId)) this.caches.set(sessionId, state);
  }
}

/** Every position's output (verification) or only the last one (a prefill chunk), in a buffer of its own. */
function answer(request: MiddleRequest, output: Float32Array, cols: number): EngineResult {
  const rows = request.allPositions ? request.nTokens : 1;
  return { sessionId: request.sessionId, ok: true, hidden: output.slice((request.nTokens - rows) * cols), rows };
}

function allFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}
