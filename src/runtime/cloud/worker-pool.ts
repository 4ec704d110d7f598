/**
 * The middle part runs off the event loop: N worker threads, each owning one onnxruntime session of
 * middle.onnx and the KV caches of the sessions assigned to it (sticky, least-loaded first).
 *
 * Scheduling: each worker has a FIFO queue; a worker receives its next batch only when idle, so the time a
 * request waits is measured here (queueMs) and the queue is where cross-device batching forms. Today a batch
 * holds one request: batching sessions whose caches differ in length needs a padded or ragged middle part,
 * the planned next step (docs/architecture.md).
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { HatError } from '../../errors.ts';
import { LinearLatencyModel } from '../ema.ts';
import type { MiddleExecutor, MiddleRequest, MiddleResult } from './executor.ts';
import type { WorkerReply, WorkerTask } from './worker-messages.ts';

interface Pending {
  request: MiddleRequest;
  enqueuedAt: number;
  resolve(result: MiddleResult): void;
  reject(error: Error): void;
}

interface Lane {
  worker: Worker;
  queue: Pending[];
  running?: Pending & { startedAt: number };
  sessions: Set<number>;
  ready: boolean;
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
}

const workerUrl = new URL('./middle-worker.ts', import.meta.url);

export class WorkerPool implements MiddleExecutor {
  private readonly lanes: Lane[] = [];
  private readonly laneOfSession = new Map<number, Lane>();
  private readonly latency = new LinearLatencyModel();
  private closing = false;

  private constructor() {}

  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool();
    const threads = options.threadsPerWorker ?? Math.max(1, Math.floor(availableParallelism() / options.workers));
    const starts = Array.from({ length: options.workers }, (_, index) => pool.startLane(index, options, threads));
    await Promise.all(starts);
    return pool;
  }

  private startLane(index: number, options: WorkerPoolOptions, threads: number): Promise<void> {
    // tsx must be registered inside the worker too, so the worker can import TypeScript.
    const worker = new Worker(new URL('./worker-bootstrap.mjs', import.meta.url), {
      workerData: { entry: workerUrl.href, splitDir: options.splitDir, threads, maxContext: options.maxContext, index },
    });
    const lane: Lane = { worker, queue: [], sessions: new Set(), ready: false };
    this.lanes.push(lane);
    return new Promise((resolve, reject) => {
      worker.on('message', (reply: WorkerReply) => {
        if (reply.kind === 'ready') {
          lane.ready = true;
          resolve();
        } else if (reply.kind === 'load-failed') {
          reject(new HatError(reply.code as 'RUNTIME', reply.message));
        } else {
          this.finish(lane, reply);
        }
      });
      worker.on('error', (error) => {
        reject(error);
        this.failLane(lane, error);
      });
      worker.on('exit', (code) => {
        if (!this.closing) this.failLane(lane, new HatError('RUNTIME', `middle worker ${index} exited with code ${code}`));
      });
    });
  }

  get ready(): boolean {
    return this.lanes.length > 0 && this.lanes.every((lane) => lane.ready);
  }

  get pending(): number {
    return this.lanes.reduce((n, lane) => n + lane.queue.length + (lane.running ? 1 : 0), 0);
  }

  latencyModel(): { baseMs: number; perTokenMs: number } {
    return this.latency.coefficients;
  }

  run(request: MiddleRequest): Promise<MiddleResult> {
    if (this.closing) return Promise.reject(new HatError('RUNTIME', 'the worker pool is shutting down'));
    let lane = this.laneOfSession.get(request.sessionId);
    if (!lane) {
      lane = this.lanes.reduce((best, l) => (l.sessions.size < best.sessions.size ? l : best));
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
    if (lane.running || !lane.ready) return;
    const next = lane.queue.shift();
    if (!next) return;
    lane.running = { ...next, startedAt: performance.now() };
    const { request } = next;
    const task: WorkerTask = { kind: 'run', ...request };
    lane.worker.postMessage(task);
  }

  private finish(lane: Lane, reply: WorkerReply): void {
    const running = lane.running;
    lane.running = undefined;
    if (running) {
      const queueMs = running.startedAt - running.enqueuedAt;
      if (reply.kind === 'result') {
        this.latency.observe(running.request.nTokens, reply.computeMs);
        running.resolve({ hidden: reply.hidden, rows: reply.rows, queueMs, computeMs: reply.computeMs });
      } else if (reply.kind === 'run-failed') {
        running.reject(new HatError('RUNTIME', reply.message));
      }
    }
    this.dispatch(lane);
  }

  private failLane(lane: Lane, error: Error): void {
    lane.ready = false;
    lane.failure ??= error;
    const failed = [...(lane.running ? [lane.running] : []), ...lane.queue];
    lane.running = undefined;
    lane.queue = [];
    for (const p of failed) p.reject(error);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const lane of this.lanes) this.failLane(lane, new HatError('RUNTIME', 'the worker pool is shutting down'));
    await Promise.all(this.lanes.map((lane) => lane.worker.terminate()));
  }
}
