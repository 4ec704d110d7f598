/**
 * serve-cloud's Prometheus metrics (prom-client), served on `/metrics` beside /health and /ready: batch size, real
 * and padded rows, queue wait, compute time, requests by kind, sessions, KV bytes in use and errors by code, plus
 * prom-client's default process metrics (CPU seconds, memory, event-loop lag). Each server gets its own registry,
 * so several servers in one process (tests) do not share counters.
 *
 * KV bytes are computed, not measured: each session's cache positions (pastLength + rows of its last successful
 * request) × the middle part's KV bytes per position, read from the manifest's KV input shapes
 * ([batch, kv_heads, past, head_dim] × dtype size, key and value, every middle layer).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SplitManifest } from '../../split/manifest.ts';
import { MAX_ERROR } from './run-cost.ts';

/** Forward frames by what the device sent: a prompt chunk (prefill flag) or a verification round. */
export type RequestKind = 'prefill_chunk' | 'verification';

/** One middle run as the worker pool saw it. */
export interface RunObservation {
  /** Device sessions in the run (1: not batched). */
  sessions: number;
  /** Hidden-state rows the requests carried. */
  rows: number;
  /** Rows the run computed, padding included (sessions × the longest request when padded). */
  paddedRows: number;
  computeMs: number;
  /** Of computeMs, gathering pasts and splitting presents back in a padded run. */
  copyMs?: number;
  /** A padded run fed the previous run's presents back as its pasts (nothing gathered). */
  inPlace?: boolean;
  /** The scheduler's class of the batch: small requests (verifications) or prefill chunks. */
  kind?: 'small' | 'chunk';
  /** Queued requests that fit the batch's limits but the cost rule kept out of it (scheduler.ts). */
  costRefused?: number;
  /** Queued requests that fit the batch's other limits but not the cache positions its worker had free. */
  kvRefused?: number;
  /** With --cost-rule on, where the scheduler asked the run-cost model about a join or a repeat: did it answer. */
  costRule?: 'answered' | 'silent';
}

const BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
const ROW_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/** Share of a run's computed rows that were padding: 0 (none) … 1. */
export const PADDING_BUCKETS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const SECONDS_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];

const BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };

/** KV bytes one cached position takes in the middle part (all layers, key + value), from the manifest's shapes. */
export function kvBytesPerPosition(manifest: SplitManifest): number {
  const inputs = new Map(manifest.parts.middle.inputs.map((i) => [i.name, i]));
  let total = 0;
  for (const pair of manifest.kv.middle) {
    for (const name of [pair.pastKey, pair.pastValue]) {
      const spec = inputs.get(name);
      if (!spec) continue;
      // [batch, kv_heads, past, head_dim]: the numeric dims are the per-position size (batch and past are symbolic);
      // where heads or head size are symbolic too, the manifest's attention figures stand in.
      const fixed = spec.shape.filter((d): d is number => typeof d === 'number');
      const { kvHeads, heads, headDim } = manifest.attention;
      const perPosition =
        fixed.length >= 2 ? fixed.reduce((a, b) => a * b, 1) : (kvHeads ?? heads ?? 0) * (headDim ?? 0);
      total += perPosition * (BYTES[spec.type] ?? 4);
    }
  }
  return total;
}

export interface CloudMetricsOptions {
  kvBytesPerPosition: number;
  /** Open device sessions and queued + running requests, read at scrape time. */
  sessions: () => number;
  pending: () => number;
  /** Each worker's run-cost model's recent relative error, by kind of run (worker-pool.ts costErrors). */
  costErrors?: () => { solo?: number; batched?: number }[];
}

export class CloudMetrics {
  readonly registry = new Registry();
  private readonly positions = new Map<number, number>();
  private readonly batchSessions: Histogram;
  private readonly batchRows: Histogram;
  private readonly batchPaddedRows: Histogram;
  private readonly batchPadding: Histogram;
  private readonly runs: Counter;
  private readonly realRows: Counter;
  private readonly paddedRows: Counter;
  private readonly compute: Histogram;
  private readonly batchCopy: Counter;
  private readonly inPlaceRuns: Counter;
  private readonly costRefused: Counter;
  private readonly kvRefused: Counter;
  private readonly costRulePicks: Counter;
  private readonly queueWait: Histogram;
  private readonly requests: Counter;
  private readonly errors: Counter;
  private readonly opened: Counter;

  constructor(options: CloudMetricsOptions) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.batchSessions = new Histogram({
      name: 'hat_cloud_batch_sessions',
      help: 'Device sessions per middle-part run (batch size)',
      buckets: BATCH_BUCKETS,
      registers,
    });
    this.batchRows = new Histogram({
      name: 'hat_cloud_batch_rows',
      help: 'Hidden-state rows the requests of one run carried (real rows)',
      buckets: ROW_BUCKETS,
      registers,
    });
    this.batchPaddedRows = new Histogram({
      name: 'hat_cloud_batch_padded_rows',
      help: 'Rows one run computed, padding included',
      buckets: ROW_BUCKETS,
      registers,
    });
    this.batchPadding = new Histogram({
      name: 'hat_cloud_batch_padding_ratio',
      help: 'Share of the rows of one run that were padding',
      buckets: PADDING_BUCKETS,
      registers,
    });
    this.runs = new Counter({
      name: 'hat_cloud_runs_total',
      help: 'Middle-part runs, by scheduler class',
      labelNames: ['class'],
      registers,
    });
    this.realRows = new Counter({
      name: 'hat_cloud_real_rows_total',
      help: 'Hidden-state rows requested, by scheduler class',
      labelNames: ['class'],
      registers,
    });
    this.paddedRows = new Counter({
      name: 'hat_cloud_padded_rows_total',
      help: 'Rows computed, padding included, by scheduler class',
      labelNames: ['class'],
      registers,
    });
    this.compute = new Histogram({
      name: 'hat_cloud_compute_seconds',
      help: 'Time inside onnxruntime per middle-part run, by scheduler class',
      labelNames: ['class'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.batchCopy = new Counter({
      name: 'hat_cloud_batch_copy_seconds_total',
      help:
        'Of the compute time, padded runs assembling the batch and splitting outputs back, session caches ' +
        "copied out of batches too little used to keep, and a session's cache copied out of a batch for a solo run",
      registers,
    });
    this.inPlaceRuns = new Counter({
      name: 'hat_cloud_batches_in_place_total',
      help: "Padded runs that fed the previous run's presents back as their pasts, gathering nothing",
      registers,
    });
    this.costRefused = new Counter({
      name: 'hat_cloud_cost_refused_joins_total',
      help:
        'Queued requests that fit a batch within --max-batch and --max-batch-tokens but were kept out because the ' +
        "worker's run-cost model predicted the batch with them dearer than apart",
      registers,
    });
    this.kvRefused = new Counter({
      name: 'hat_cloud_kv_refused_joins_total',
      help:
        'Queued requests that fit a batch within --max-batch and --max-batch-tokens but were kept out because the ' +
        "run's gathered pasts and presents would not fit what the worker's share of --kv-memory has free",
      registers,
    });
    this.costRulePicks = new Counter({
      name: 'hat_cloud_cost_rule_picks_total',
      help:
        'With --cost-rule on, batch picks in which the scheduler asked the run-cost model about a join or a repeat, ' +
        'by whether it answered (silent until it has seen enough solo runs and predicted both solo and batched ' +
        `runs, and while its recent predictions are off by more than ${MAX_ERROR * 100} %)`,
      labelNames: ['answer'],
      registers,
    });
    this.queueWait = new Histogram({
      name: 'hat_cloud_queue_wait_seconds',
      help: "Time a request waited in its worker's queue, by request kind",
      labelNames: ['kind'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.requests = new Counter({
      name: 'hat_cloud_requests_total',
      help: 'Forward frames received, by kind',
      labelNames: ['kind'],
      registers,
    });
    this.errors = new Counter({
      name: 'hat_cloud_errors_total',
      help: 'Error frames sent to devices, by code',
      labelNames: ['code'],
      registers,
    });
    this.opened = new Counter({ name: 'hat_cloud_sessions_opened_total', help: 'Device sessions opened', registers });
    new Gauge({
      name: 'hat_cloud_sessions',
      help: 'Open device sessions',
      registers,
      collect() {
        this.set(options.sessions());
      },
    });
    new Gauge({
      name: 'hat_cloud_pending_requests',
      help: 'Requests queued or running on the middle workers',
      registers,
      collect() {
        this.set(options.pending());
      },
    });
    new Gauge({
      name: 'hat_cloud_cost_model_error',
      help:
        "Mean relative error of each worker's recent run-cost predictions, solo and batched runs " +
        `(--cost-rule answers only while both are at most ${MAX_ERROR})`,
      labelNames: ['worker', 'runs'],
      registers,
      collect() {
        (options.costErrors?.() ?? []).forEach((errors, worker) => {
          for (const runs of ['solo', 'batched'] as const) {
            const value = errors[runs];
            if (value !== undefined) this.set({ worker: String(worker), runs }, value);
          }
        });
      },
    });
    const positions = this.positions;
    const total = () => [...positions.values()].reduce((a, b) => a + b, 0);
    new Gauge({
      name: 'hat_cloud_kv_positions',
      help: 'Cached positions over all sessions',
      registers,
      collect() {
        this.set(total());
      },
    });
    new Gauge({
      name: 'hat_cloud_kv_bytes',
      registers,
      help: "KV cache bytes in use: cached positions × the middle part's KV bytes per position (from the manifest)",
      collect() {
        this.set(total() * options.kvBytesPerPosition);
      },
    });
    new Gauge({
      name: 'hat_cloud_kv_bytes_per_position',
      help: 'KV bytes one cached position takes (all middle layers)',
      registers,
      collect() {
        this.set(options.kvBytesPerPosition);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  observeRun(run: RunObservation): void {
    if (run.paddedRows <= 0) return; // a run that failed as a whole computed nothing
    const cls = run.kind ?? 'small';
    this.runs.inc({ class: cls });
    this.batchSessions.observe(run.sessions);
    this.batchRows.observe(run.rows);
    this.batchPaddedRows.observe(run.paddedRows);
    this.batchPadding.observe(Math.max(0, run.paddedRows - run.rows) / run.paddedRows);
    this.realRows.inc({ class: cls }, run.rows);
    this.paddedRows.inc({ class: cls }, run.paddedRows);
    this.compute.observe({ class: cls }, run.computeMs / 1000);
    this.batchCopy.inc((run.copyMs ?? 0) / 1000);
    if (run.inPlace) this.inPlaceRuns.inc();
    if (run.costRefused) this.costRefused.inc(run.costRefused);
    if (run.kvRefused) this.kvRefused.inc(run.kvRefused);
    if (run.costRule) this.costRulePicks.inc({ answer: run.costRule });
  }

  request(kind: RequestKind): void {
    this.requests.inc({ kind });
  }

  /** A request came back: its queue wait, and the session's cache now holds `positions` positions. */
  answered(sessionId: number, kind: RequestKind, queueMs: number, positions: number): void {
    this.queueWait.observe({ kind }, queueMs / 1000);
    if (this.positions.has(sessionId)) this.positions.set(sessionId, positions);
  }

  sessionOpened(sessionId: number): void {
    this.opened.inc();
    this.positions.set(sessionId, 0);
  }

  sessionClosed(sessionId: number): void {
    this.positions.delete(sessionId);
  }

  error(code: string): void {
    this.errors.inc({ code });
  }
}
