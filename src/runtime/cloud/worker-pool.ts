/**
 * The middle part runs off the event loop: N worker threads, each owning one onnxruntime session of
 * middle.onnx and the KV caches of the sessions assigned to it (sticky, least-loaded first).
 *
 * Scheduling: each worker has a FIFO queue; whenever a worker is idle, the scheduler (scheduler.ts) picks from
 * its queue the next batch — at most one request per session, within --max-batch and --max-batch-tokens — and
 * the worker runs it as one padded run (padded-batch.ts) when the split can batch (manifest `batching`), else one
 * by one. The time a request waits is measured here (queueMs); the latency model g(X) is fitted on whole runs,
 * X = padded rows. Every result carries the worker's rows advice (rows-advice.ts) from the sessions verifying on it.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { errorFromData, HatError } from '../../errors.ts';
import { BusyShare, Ema, LinearLatencyModel } from '../ema.ts';
import type { BatchingMode } from '../../split/manifest.ts';
import type { MiddleExecutor, MiddleRequest, MiddleResult } from './executor.ts';
import type { Logger } from './logger.ts';
import type { PastLayout } from './padded-batch.ts';
import {
  afterRun,
  classify,
  DEFAULT_SMALL_ROWS,
  FIRST_TURN,
  MAX_MERGED_ROWS,
  mergedRowsFor,
  nextBatch,
  type BatchLimits,
  type BatchPick,
  type RunGroup,
  type Turn,
} from './scheduler.ts';
import type { WorkerReply, WorkerTask } from './worker-messages.ts';
import type { RunObservation } from './cloud-metrics.ts';
import { RunCostModel, type RunShape } from './run-cost.ts';
import { budgetFromProbe, cheapestMsPerRow, probeRows, type ProbeTime } from './batch-knee.ts';
import { adviseRows, BUSY_TAU_MS, DEFAULT_ROWS_ADVICE, type RowsAdviceWhen } from './rows-advice.ts';

interface Pending {
  request: MiddleRequest;
  enqueuedAt: number;
  resolve(result: MiddleResult): void;
  reject(error: Error): void;
}

/**
 * One request of a run as the worker sees it: a queued request, or a session's consecutive prompt chunks sent as one
 * (scheduler.ts `follow`), whose result is split back per chunk.
 */
interface RunningRequest {
  request: MiddleRequest;
  parts: Array<Pending & { startedAt: number }>;
}

interface Lane {
  worker: Worker;
  queue: Pending[];
  /** The batch the worker is running, in the order it was sent. */
  running: RunningRequest[];
  /** Whose turn it is when verifications and chunks both wait. */
  turn: Turn;
  /** What the scheduler picked for the run in progress. */
  pick?: BatchPick;
  sessions: Set<number>;
  /** Cache positions the worker held after its last run (views' whole batch presents included). */
  heldPositions: number;
  /** Each session's last padded run (scheduler.ts repeats a run's sessions so its presents are fed in place). */
  groups: Map<number, RunGroup>;
  /** What this worker's runs cost, by shape: the scheduler batches where it pays. */
  cost: RunCostModel;
  /** Sessions with a verification running or queued, smoothed over the worker's small runs (rows-advice.ts). */
  demand: Ema;
  /** How much of its recent time the worker spent running: the advice applies only near saturation. */
  busy: BusyShare;
  /** Picks made with several sessions queued: every EXPLORE_EVERY-th of them ignores the cost rule. */
  picks: number;
  ready: boolean;
  /** Waiting for the worker's knee probe (batch-knee.ts). */
  probed?: (reply: WorkerReply) => void;
  /** Why the worker stopped; requests routed to it afterwards are rejected with it rather than queued forever. */
  failure?: Error;
}

export interface WorkerPoolOptions {
  splitDir: string;
  workers: number;
  /** Intra-op threads per worker; default cores / workers. */
  threadsPerWorker?: number;
  /** Largest KV length a session may grow to. */
  maxContext: number;
  /** How the split batches (manifest `batching`); 'none' runs one request at a time. */
  batching?: BatchingMode;
  /** Whether a batch's presents may be fed back as the same sessions' next pasts (manifest `batching.inPlace`). */
  inPlace?: boolean;
  /**
   * --kv-memory in cache positions, shared evenly by the workers (new sessions go to the least loaded one): each
   * copies views out of batches' presents rather than hold more than its share (middle-engine.ts).
   */
  kvPositions?: number;
  /** Sessions per run (1: batching off). */
  maxBatch?: number;
  /**
   * Padded rows per run; by default the knee measured on the first worker at start (batch-knee.ts), or
   * DEFAULT_TOKENS_PER_THREAD × intra-op threads per worker where that probe fails.
   */
  maxBatchTokens?: number;
  /** Join a request to a batch only where the worker's fitted run cost says it pays (run-cost.ts). */
  costRule?: boolean;
  /** When results advise a verification's rows (rows-advice.ts); default DEFAULT_ROWS_ADVICE ('off'). */
  rowsAdvice?: RowsAdviceWhen;
  /** Sessions a gathered batch of small requests must hold (scheduler.ts BatchLimits.minBatch); default 2. */
  minBatch?: number;
  logger?: Logger;
}

/**
 * Padded rows per intra-op thread in one run where the knee could not be measured (and in `hat bench --simulate`).
 * Batched throughput on a 5-layer Qwen2.5-0.5B-shaped middle with 2 threads stopped rising between 40 and 80 padded
 * rows (../shared/docs/fleet-serving.md §1): 32 per thread puts 2 threads at 64.
 */
export const DEFAULT_TOKENS_PER_THREAD = 32;
export const DEFAULT_MAX_BATCH = 16;
/**
 * Any batch runs; 3 lowered hat's TTFT at moderate load on the default split but may cost saturated throughput
 * (README).
 */
export const DEFAULT_MIN_BATCH = 2;
/**
 * Of the picks made with several sessions queued, every this many ignores the cost rule (batches what fits the
 * limits), so a rule that has stopped batching still sees batched runs and can find out it was wrong (run-cost.ts).
 */
export const EXPLORE_EVERY = 8;
/** How long serve-cloud's start waits for the knee probe before it keeps the fallback budget. */
const PROBE_TIMEOUT_MS = 120_000;

const workerUrl = new URL('./middle-worker.ts', import.meta.url);

export class WorkerPool implements MiddleExecutor {
  private readonly lanes: Lane[] = [];
  private readonly laneOfSession = new Map<number, Lane>();
  private readonly latency = new LinearLatencyModel();
  private closing = false;
  /** Padded runs so far: group ids. */
  private runCount = 0;
  /** What the scheduler may put in one run. */
  readonly limits: BatchLimits;
  /** Whether the scheduler consults each worker's fitted run cost (--cost-rule). */
  costRule = false;
  /** When results advise a verification's rows (--rows-advice). */
  rowsAdvice: RowsAdviceWhen = DEFAULT_ROWS_ADVICE;
  /** Each worker's share of --kv-memory, cache positions (Infinity: unbounded). */
  private kvShare = Infinity;
  /** The knee probe's figures when --max-batch-tokens was left to its default (batch-knee.ts). */
  knee?: { rows: number; bracketed: boolean; times: ProbeTime[] } | { failed: string };
  /** Counts over every run since start: requests, runs, runs of several sessions, the largest, real and padded rows. */
  readonly stats = { requests: 0, runs: 0, batchedRuns: 0, largestBatch: 0, rows: 0, paddedRows: 0 };
  private readonly logger?: Logger;
  /** Called after every run that computed (serve-cloud's /metrics, cloud-metrics.ts). */
  onRun?: (run: RunObservation) => void;

  private constructor(limits: BatchLimits, logger?: Logger) {
    this.limits = limits;
    this.logger = logger;
  }

  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const threads = options.threadsPerWorker ?? Math.max(1, Math.floor(availableParallelism() / options.workers));
    const mode = options.batching ?? 'none';
    const pool = new WorkerPool(
      {
        maxBatch: mode === 'none' ? 1 : (options.maxBatch ?? DEFAULT_MAX_BATCH),
        maxBatchTokens: options.maxBatchTokens ?? DEFAULT_TOKENS_PER_THREAD * threads,
        smallRows: DEFAULT_SMALL_ROWS,
        batchableRows: mode === 'single-row' ? 1 : Infinity,
        // Lowered where the knee probe finds rows dear (mergedRowsFor); kept with no probe (--max-batch-tokens given).
        mergedRows: MAX_MERGED_ROWS,
        minBatch: options.minBatch ?? DEFAULT_MIN_BATCH,
        inPlace: options.inPlace ?? false,
      },
      options.logger,
    );
    pool.costRule = options.costRule ?? false;
    pool.rowsAdvice = options.rowsAdvice ?? DEFAULT_ROWS_ADVICE;
    if (options.kvPositions !== undefined) pool.kvShare = options.kvPositions / options.workers;
    // --max-batch 1 keeps the worker on exactly the pre-batching path (no padded runner at all).
    const layout: PastLayout | undefined =
      pool.limits.maxBatch === 1 ? undefined : mode === 'single-row' ? 'right' : 'left';
    const starts = Array.from({ length: options.workers }, (_, i) => pool.startLane(i, options, threads, layout));
    // Every worker settles first (ending a thread inside onnxruntime aborts the process), then a failed start ends
    // them all: a caller that handles the error keeps no threads behind.
    const failed = (await Promise.allSettled(starts)).find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      pool.closing = true;
      await Promise.all(pool.lanes.map((lane) => lane.worker.terminate()));
      throw failed.reason;
    }
    if (options.maxBatchTokens === undefined && pool.limits.maxBatch > 1) await pool.measureKnee(options.maxContext);
    return pool;
  }

  /**
   * Times runs of the first worker's middle part at each probe row count and takes the knee as the batch budget
   * (batch-knee.ts); the fallback stands where the probe cannot run, fails or gets no answer.
   */
  private async measureKnee(maxContext: number): Promise<void> {
    const lane = this.lanes[0];
    const rows = probeRows(maxContext);
    if (!rows.length) return; // a context too short to probe: the fallback budget stands
    const fail = (message: string) => {
      this.knee = { failed: message };
      this.logger?.log('batch-knee-failed', { message, maxBatchTokens: this.limits.maxBatchTokens });
    };
    if (lane.failure) return fail(lane.failure.message);
    let timer: NodeJS.Timeout | undefined;
    const reply = await new Promise<WorkerReply>((resolve) => {
      lane.probed = resolve;
      timer = setTimeout(
        () => resolve({ kind: 'probe-failed', message: `no answer within ${PROBE_TIMEOUT_MS / 1000} s` }),
        PROBE_TIMEOUT_MS,
      );
      const task: WorkerTask = { kind: 'probe', rows };
      lane.worker.postMessage(task);
    });
    clearTimeout(timer);
    lane.probed = undefined;
    if (reply.kind !== 'probed') return fail(reply.kind === 'probe-failed' ? reply.message : reply.kind);
    const budget = budgetFromProbe(reply.times, this.limits.maxBatchTokens);
    if (!budget) return fail('no probe run was timed');
    this.limits.maxBatchTokens = budget.rows;
    this.limits.mergedRows = mergedRowsFor(cheapestMsPerRow(reply.times));
    this.knee = { ...budget, times: reply.times };
  }

  private startLane(index: number, options: WorkerPoolOptions, threads: number, layout?: PastLayout): Promise<void> {
    // tsx must be registered inside the worker too, so the worker can import TypeScript.
    const worker = new Worker(new URL('./worker-bootstrap.mjs', import.meta.url), {
      workerData: {
        entry: workerUrl.href,
        splitDir: options.splitDir,
        threads,
        maxContext: options.maxContext,
        maxHeldPositions: Number.isFinite(this.kvShare) ? this.kvShare : undefined,
        index,
        layout,
        inPlace: options.inPlace ?? false,
      },
    });
    const lane: Lane = {
      worker,
      queue: [],
      running: [],
      sessions: new Set(),
      heldPositions: 0,
      groups: new Map(),
      cost: new RunCostModel(),
      demand: new Ema(),
      busy: new BusyShare(BUSY_TAU_MS),
      picks: 0,
      ready: false,
      turn: FIRST_TURN,
    };
    this.lanes.push(lane);
    return new Promise((resolve, reject) => {
      worker.on('message', (reply: WorkerReply) => {
        if (reply.kind === 'ready') {
          lane.ready = true;
          resolve();
        } else if (reply.kind === 'load-failed') {
          reject(errorFromData(reply, 'RUNTIME'));
        } else if (reply.kind === 'probed' || reply.kind === 'probe-failed') {
          lane.probed?.(reply);
        } else {
          this.finish(lane, reply);
        }
      });
      worker.on('error', (error) => {
        reject(error);
        this.failLane(lane, workerLost(index, `failed: ${error.message}`));
      });
      worker.on('exit', (code) => {
        if (!lane.ready)
          reject(new HatError('RUNTIME', `middle worker ${index} exited with code ${code} while loading`));
        if (!this.closing) this.failLane(lane, workerLost(index, `exited with code ${code}`));
      });
    });
  }

  get ready(): boolean {
    return this.lanes.length > 0 && this.lanes.every((lane) => lane.ready);
  }

  /** Each worker's run-cost model: how far off its recent predictions of solo and of batched runs were. */
  get costErrors(): { solo?: number; batched?: number }[] {
    return this.lanes.map((lane) => lane.cost.recentErrors);
  }

  get pending(): number {
    return this.lanes.reduce((n, lane) => n + lane.queue.length + partsOf(lane.running).length, 0);
  }

  latencyModel(): { baseMs: number; perTokenMs: number } {
    return this.latency.coefficients;
  }

  run(request: MiddleRequest): Promise<MiddleResult> {
    if (this.closing) return Promise.reject(new HatError('GOING_AWAY', 'the worker pool is shutting down'));
    let lane = this.laneOfSession.get(request.sessionId);
    if (!lane) {
      // A failed worker holds no sessions (they were failed with it), so it would look least loaded: skip it.
      const alive = this.lanes.filter((l) => !l.failure);
      lane = (alive.length ? alive : this.lanes).reduce((best, l) => (l.sessions.size < best.sessions.size ? l : best));
      lane.sessions.add(request.sessionId);
      this.laneOfSession.set(request.sessionId, lane);
    }
    const target = lane;
    if (target.failure) return Promise.reject(target.failure);
    return new Promise((resolve, reject) => {
      target.queue.push({ request, enqueuedAt: performance.now(), resolve, reject });
      this.dispatch(target);
    });
  }

  drop(sessionId: number): void {
    const lane = this.laneOfSession.get(sessionId);
    if (!lane) return;
    this.laneOfSession.delete(sessionId);
    lane.sessions.delete(sessionId);
    lane.groups.delete(sessionId);
    lane.queue = lane.queue.filter((p) => {
      if (p.request.sessionId !== sessionId) return true;
      p.reject(new HatError('RUNTIME', 'session closed'));
      return false;
    });
    // Queued behind any running task, so a dropped session's cache is freed after its last run.
    const task: WorkerTask = { kind: 'drop', sessionId };
    lane.worker.postMessage(task);
  }

  private dispatch(lane: Lane): void {
    if (lane.running.length > 0 || !lane.ready || this.closing) return;
    const now = performance.now();
    const queued = lane.queue.map((p) => ({
      sessionId: p.request.sessionId,
      rows: p.request.nTokens,
      past: p.request.pastLength,
      group: lane.groups.get(p.request.sessionId),
      waitedMs: now - p.enqueuedAt,
      promptRows: p.request.promptRows,
    }));
    // Only picks where a batch could form count towards exploring: a lone request runs alone either way.
    const choice = () => queued.some((q) => q.sessionId !== queued[0].sessionId);
    const consult = this.costRule && !(choice() && ++lane.picks % EXPLORE_EVERY === 0);
    // Whether the scheduler asked the rule about a join or a repeat in this pick, and whether it gave an answer:
    // reported per pick so /metrics shows why a rule that is on refuses nothing (still learning, or off the mark).
    let asked = false;
    let answered = false;
    const cost = (shape: RunShape) => {
      asked = true;
      const ms = lane.cost.predict(shape);
      answered ||= ms !== undefined;
      return ms;
    };
    const pick = nextBatch(queued, this.limitsFor(lane), lane.turn, consult ? cost : undefined);
    if (!pick) return;
    if (asked) pick.costRule = answered ? 'answered' : 'silent';
    const startedAt = performance.now();
    const taken = (i: number) => ({ ...lane.queue[i], startedAt });
    lane.running = pick.follow
      ? [joined([pick.indices[0], ...pick.follow].map(taken))]
      : pick.indices.map((i) => ({ request: lane.queue[i].request, parts: [taken(i)] }));
    const picked = new Set([...pick.indices, ...(pick.follow ?? [])]);
    lane.queue = lane.queue.filter((_, i) => !picked.has(i));
    lane.pick = pick;
    const task: WorkerTask = { kind: 'run', requests: lane.running.map((p) => p.request) };
    lane.worker.postMessage(task);
  }

  /** The limits of a lane's next pick: its runs allocate no more cache positions than its share has free. */
  private limitsFor(lane: Lane): BatchLimits {
    if (!Number.isFinite(this.kvShare)) return this.limits;
    return { ...this.limits, maxRunPositions: Math.max(0, this.kvShare - lane.heldPositions) };
  }

  /**
   * The sessions whose cache is now a view of a padded run's presents form a group; the others of the batch (run
   * alone, refused, failed) have none, and nor does a session dropped while it ran (it would stay in `groups`).
   */
  private rememberGroup(lane: Lane, running: readonly RunningRequest[], reply: WorkerReply & { kind: 'ran' }): void {
    const { padded } = reply;
    const group = padded ? { id: ++this.runCount, size: padded.batch, width: padded.width } : undefined;
    running.forEach(({ request: { sessionId } }, i) => {
      const viewed = padded?.sessions.includes(sessionId) && reply.results[i].ok && lane.sessions.has(sessionId);
      if (group && viewed) lane.groups.set(sessionId, group);
      else lane.groups.delete(sessionId);
    });
  }

  private finish(lane: Lane, reply: WorkerReply): void {
    if (reply.kind !== 'ran') return;
    const running = lane.running;
    lane.running = [];
    if (reply.paddedRows > 0) this.latency.observe(reply.paddedRows, reply.computeMs);
    // A drop since frees memory the next reply reports: until then the bound errs on the safe side.
    lane.heldPositions = reply.heldPositions ?? lane.heldPositions;
    // The cost model learns from runs whose shape is known: one padded run, or a lone request run alone (a batch
    // the engine cut down to one request, or that fell back to solo runs, is neither).
    const ran = reply.padded ? running.filter((r) => reply.padded!.sessions.includes(r.request.sessionId)) : running;
    if (reply.paddedRows > 0 && reply.batchError === undefined && (reply.padded || running.length === 1)) {
      lane.cost.observe({ ...shapeOf(ran), inPlace: reply.inPlace }, reply.computeMs, reply.copyMs);
    }
    if (lane.pick) lane.turn = afterRun(lane.turn, lane.pick, reply.computeMs);
    if (lane.pick?.kind === 'small') lane.demand.update(this.verifyingSessions(lane, running));
    // The worker was taken from the send to this reply (compute, the copies around it, messaging): what a saturated
    // worker never has spare.
    const now = performance.now();
    lane.busy.busy(now, now - (running[0]?.parts[0]?.startedAt ?? now));
    const advisedRows = adviseRows(this.limits, lane.demand.valueOr(1), lane.busy.valueAt(now), this.rowsAdvice);
    this.rememberGroup(lane, running, reply);
    this.count(running, reply.paddedRows);
    this.onRun?.({
      sessions: running.length,
      rows: running.reduce((n, p) => n + p.request.nTokens, 0),
      paddedRows: reply.paddedRows,
      computeMs: reply.computeMs,
      copyMs: reply.copyMs,
      inPlace: reply.inPlace,
      kind: lane.pick?.kind,
      costRefused: lane.pick?.costRefused,
      kvRefused: lane.pick?.kvRefused,
      costRule: lane.pick?.costRule,
    });
    if (reply.batchError) this.logger?.log('batch-failed', { sessions: running.length, message: reply.batchError });
    running.forEach(({ parts }, i) => {
      const result = reply.results[i];
      if (!result.ok) {
        for (const pending of parts) pending.reject(new HatError(result.code, result.message));
        return;
      }
      const answers = parts.length === 1 ? [result] : splitRows(parts, result.hidden, result.rows);
      parts.forEach((pending, j) => {
        const { hidden, rows } = answers[j];
        const queueMs = pending.startedAt - pending.enqueuedAt;
        pending.resolve({ hidden, rows, queueMs, computeMs: reply.computeMs, advisedRows });
      });
    });
    this.dispatch(lane);
  }

  /** Sessions of a small run just finished plus other sessions with a small request queued behind it. */
  private verifyingSessions(lane: Lane, running: readonly RunningRequest[]): number {
    const sessions = new Set(running.map((r) => r.request.sessionId));
    for (const { request } of lane.queue) {
      if (classify(request.nTokens, this.limits) === 'small') sessions.add(request.sessionId);
    }
    return sessions.size;
  }

  /** Sessions per run count a session's joined chunks once; requests count each chunk. */
  private count(running: readonly RunningRequest[], paddedRows: number): void {
    const requests = partsOf(running).map((p) => p.request);
    this.stats.requests += requests.length;
    this.stats.runs += 1;
    if (running.length > 1) this.stats.batchedRuns += 1;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, running.length);
    this.stats.rows += requests.reduce((n, r) => n + r.nTokens, 0);
    this.stats.paddedRows += paddedRows;
  }

  private failLane(lane: Lane, error: Error): void {
    lane.probed?.({ kind: 'probe-failed', message: error.message });
    lane.ready = false;
    lane.failure ??= error;
    const failed = [...partsOf(lane.running), ...lane.queue];
    lane.running = [];
    lane.queue = [];
    for (const p of failed) p.reject(error);
  }

  /**
   * Queued requests are refused; runs in progress finish first (terminating a worker inside onnxruntime's run
   * aborts the whole process), then the workers stop. A run that outlasts `graceMs` is abandoned.
   */
  async close(graceMs = 30_000): Promise<void> {
    this.closing = true;
    const shuttingDown = new HatError('GOING_AWAY', 'the worker pool is shutting down');
    for (const lane of this.lanes) {
      for (const p of lane.queue) p.reject(shuttingDown);
      lane.queue = [];
    }
    const deadline = Date.now() + graceMs;
    while (this.lanes.some((lane) => lane.running.length > 0 && !lane.failure) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (const lane of this.lanes) this.failLane(lane, shuttingDown);
    await Promise.all(this.lanes.map((lane) => lane.worker.terminate()));
  }
}

/**
 * A worker that stopped took its sessions' caches with it. GOING_AWAY (retryable) lets their devices resume: a new
 * session is placed on a live worker, or on another replica (this one no longer answers /ready).
 */
const workerLost = (index: number, how: string) =>
  new HatError(
    'GOING_AWAY',
    `middle worker ${index} ${how}; the sessions it held lost their caches`,
    'devices resume their sessions on a live worker or another replica; restart serve-cloud to recover the worker',
  );

const partsOf = (running: readonly RunningRequest[]) => running.flatMap((r) => r.parts);

/** A session's consecutive chunks as one request: their rows in order, every position's output kept to split back. */
function joined(parts: Array<Pending & { startedAt: number }>): RunningRequest {
  const first = parts[0].request;
  const hidden = new Float32Array(parts.reduce((n, p) => n + p.request.hidden.length, 0));
  let offset = 0;
  for (const { request } of parts) {
    hidden.set(request.hidden, offset);
    offset += request.hidden.length;
  }
  const nTokens = parts.reduce((n, p) => n + p.request.nTokens, 0);
  return { request: { ...first, nTokens, hidden, allPositions: true }, parts };
}

/** Each chunk's answer from the joined request's every-position output: its rows, or only its last one. */
function splitRows(
  parts: readonly Pending[],
  output: Float32Array,
  rows: number,
): Array<{ hidden: Float32Array; rows: number }> {
  const cols = output.length / rows;
  let end = 0;
  return parts.map(({ request }) => {
    end += request.nTokens;
    const kept = request.allPositions ? request.nTokens : 1;
    return { hidden: output.slice((end - kept) * cols, end * cols), rows: kept };
  });
}

function shapeOf(running: readonly RunningRequest[]): RunShape {
  return {
    sessions: running.length,
    rows: Math.max(...running.map((p) => p.request.nTokens)),
    past: Math.max(...running.map((p) => p.request.pastLength)),
    pastSum: running.reduce((n, p) => n + p.request.pastLength, 0),
  };
}
