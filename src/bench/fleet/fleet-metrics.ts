/**
 * One fleet run in figures: what the EMULATED devices saw (throughput, TTFT, TBT, SLO attainment, exactness) and
 * what the real serve-cloud reported on /metrics over the run (batch-size and padding histograms, runs, rows) and
 * spent (CPU from /proc). Definitions:
 * - throughput: tokens committed inside the load window / the window (sessions that run past it count up to it);
 * - TTFT: from a session's arrival to its first token, less the WebSocket handshake (so it includes waiting for a
 *   free emulated device); TBT: a round's time spread over the tokens it committed, as `hat bench` does;
 * - SLO attainment: share of the sessions that arrived with TTFT ≤ the TTFT SLO and mean TBT ≤ the TBT SLO
 *   (a failed session misses it);
 * - cost per token: the cloud's compute and CPU over the whole run (window and drain) per token committed by all of
 *   the run's sessions. A saturated cloud serves 1 / this cost per core, free of the window's start-up transient:
 *   a closed loop's window opens with every device's prompt at once, so tokens inside the window can reward a
 *   configuration for leaving prompts to the drain (on the Qwen shape, u-shape's window ratio equalled the ratio
 *   it would reach if verifications cost nothing).
 */
import { summarize, type Summary } from '../../runtime/device/metrics.ts';
import { tokenGaps } from '../record.ts';
import type { LoadRun, LoadShape } from './load.ts';
import { TTFT_SEGMENTS, type TtftPath } from './ttft-path.ts';
import type { SessionPoint } from './paired-ratio.ts';
import { histogram, histogramDelta, sampleValue, type HistogramCounts, type Sample } from './prom-text.ts';

export interface FleetRunStats {
  mode: string;
  /** The cloud's --max-batch in this run (1: batching off). */
  maxBatch: number;
  batching: 'on' | 'off';
  load: LoadShape;
  /** Offered load in sessions per second: the Poisson rate, or what the closed loop achieved. */
  offeredSessionsPerSecond: number;
  /** Sessions that arrived in the window, per second. */
  arrivedSessionsPerSecond: number;
  devices: number;
  durationS: number;
  sessions: { arrived: number; completed: number; failed: number };
  /** Committed tokens per second of the window (the cloud's throughput). */
  throughputTokensPerSecond: number;
  ttftMs: Summary;
  /** Mean TTFT of the completed sessions by prompt length in tokens (hat's chunking gains most on long prompts). */
  ttftMsByPrompt?: Record<string, { sessions: number; mean: number }>;
  /**
   * Mean TTFT split along each session's critical path (ttft-path.ts), over the completed sessions and by prompt
   * length: waiting for a free EMULATED device, then the path's segments. They add up to the mean TTFT.
   */
  ttftPath?: { all: TtftPathMeans; byPrompt: Record<string, TtftPathMeans> };
  tbtMs: Summary;
  /** Each completed session's TTFT and gaps by arrival, for the paired hat / u-shape intervals (paired-ratio.ts). */
  sessionPoints?: SessionPoint[];
  sloAttainment: number;
  /**
   * Rounds after the first token, over the completed sessions: mean TBT is exactly roundMs / tokensPerRound (a
   * round's time spread over its tokens). roundMs is from commit to commit; of it, deviceMs went on the device
   * before the send and roundTripMs from send to result (EMULATED link and serve-cloud), the rest on committing.
   */
  rounds: { count: number; tokensPerRound: number; roundMs: number; deviceMs: number; roundTripMs: number };
  meanDeviceWaitMs: number;
  /** How late EMULATED devices sent frames against their recorded schedule (this process's timers). */
  emulationLateMs: { p50: number; p99: number };
  /** Results compared with the recording: byte-identical ones, and the largest difference. */
  results: { checked: number; identical: number; maxAbsDiff: number };
  /**
   * Recorded verification rounds of more rows than the cloud advised (SIMULATION of drafting fewer, replay.ts
   * splitRound), and the rounds sent for them: as many where only the rows past a rejected draft were cut, more
   * where accepted drafts were split over several rounds.
   */
  advice: { splitRounds: number; into: number };
  /** serve-cloud's CPU over the run (all its threads), and cores kept busy on average. */
  server: { cpuSeconds: number | null; busyCores: number | null };
  /**
   * The cloud's cost per committed token over the whole run (window and drain; every session's commits, failed ones
   * included): compute time, split into prompt-chunk runs and small runs, and serve-cloud's CPU.
   */
  cost: {
    tokens: number;
    computeMsPerToken: number;
    chunkMsPerToken: number;
    smallMsPerToken: number;
    cpuMsPerToken: number | null;
    /** Hidden-state rows requested per committed token, by scheduler class (verification rows: drafts + 1). */
    rowsPerToken: { chunk: number; small: number };
    /** Compute per row computed (padding included), by scheduler class; 0 where the class never ran. */
    msPerPaddedRow: { chunk: number; small: number };
  };
  cloud: {
    runs: number;
    requests: { prefillChunk: number; verification: number };
    meanBatchSessions: number;
    /** Rows computed that were padding, over all rows computed. */
    paddingShare: number;
    batchSessions: HistogramCounts;
    paddingRatio: HistogramCounts;
    meanQueueWaitMs: number;
    /** Mean queue wait of prompt chunks and of verification rounds (by the frame's prefill flag). */
    queueWaitMsByKind: { prefillChunk: number; verification: number };
    computeSeconds: number;
    /** Of computeSeconds: runs of prompt chunks and of small requests (the scheduler's classes), and cache copies. */
    computeSecondsByClass: { chunk: number; small: number };
    copySeconds: number;
    /** Padded runs that fed the previous run's presents back as pasts (no gather). */
    inPlaceRuns: number;
    /** Queued requests that fit a batch's limits but the cost rule kept out of it. */
    costRefusedJoins: number;
    /** Queued requests that fit a batch's limits but not the KV positions its worker's --kv-memory share had free. */
    kvRefusedJoins?: number;
    /** --cost-rule on: picks that asked the run-cost model about a join or a repeat, by whether it answered. */
    costRulePicks?: { answered: number; silent: number };
    errors: Record<string, number>;
  };
  /** The first distinct session errors, if any. */
  errors: string[];
}

export type TtftPathMeans = TtftPath & { sessions: number; deviceWaitMs: number };

export interface RunContext {
  mode: string;
  maxBatch: number;
  load: LoadShape;
  devices: number;
  sloTtftMs: number;
  sloTbtMs: number;
  before: Sample[];
  after: Sample[];
  cpuSeconds: number | null;
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

function counterDelta(ctx: RunContext, name: string, labels: Record<string, string> = {}): number {
  return sampleValue(ctx.after, name, labels) - sampleValue(ctx.before, name, labels);
}

/** Mean of a labelled histogram over the run, × scale (0 when it observed nothing). */
function histogramMean(ctx: RunContext, name: string, labels: Record<string, string>, scale = 1): number {
  const count = counterDelta(ctx, `${name}_count`, labels);
  return count ? round((counterDelta(ctx, `${name}_sum`, labels) / count) * scale) : 0;
}

function errorsByCode(ctx: RunContext): Record<string, number> {
  const codes = new Set(ctx.after.filter((s) => s.name === 'hat_cloud_errors_total').map((s) => s.labels.code));
  const out: Record<string, number> = {};
  for (const code of codes) {
    const n = counterDelta(ctx, 'hat_cloud_errors_total', { code });
    if (n > 0) out[code] = n;
  }
  return out;
}

/**
 * The rounds after each session's first token, in sums over `sessions` (see FleetRunStats.rounds). Round time and
 * tokens per round are per commit interval, device and send-to-result times per decode frame sent: the two agree
 * while each result commits once (not in hat's local fallback after a lost cloud: many commits on one result). The
 * device time is the recording's, as scheduled; send-to-result starts at the actual send, so a late emulated send is
 * in neither and shows as the round time's remainder.
 */
function decodeRounds(sessions: readonly LoadRun['sessions'][number][]): FleetRunStats['rounds'] {
  let intervals = 0;
  let spanMs = 0;
  let tokens = 0;
  for (const { commits } of sessions) {
    if (commits.length < 2) continue;
    const times = commits.map((c) => c.at);
    const first = Math.min(...times);
    intervals += commits.length - 1;
    spanMs += Math.max(...times) - first;
    // The first commit is the first token (TTFT's); the rounds after it commit the rest.
    tokens += commits.reduce((n, c) => n + c.count, 0) - commits[times.indexOf(first)].count;
  }
  const sent = sessions.reduce((n, s) => n + s.decode.rounds, 0);
  const sum = (key: 'deviceMs' | 'roundTripMs') => sessions.reduce((n, s) => n + s.decode[key], 0);
  return {
    count: intervals,
    tokensPerRound: intervals ? round(tokens / intervals) : 0,
    roundMs: intervals ? round(spanMs / intervals) : 0,
    deviceMs: sent ? round(sum('deviceMs') / sent) : 0,
    roundTripMs: sent ? round(sum('roundTripMs') / sent) : 0,
  };
}

function meansByPrompt(
  sessions: ReadonlyArray<{ promptTokens: number; ttft: number }>,
): Record<string, { sessions: number; mean: number }> {
  const out: Record<string, { sessions: number; mean: number }> = {};
  const lengths = [...new Set(sessions.map((s) => s.promptTokens))].sort((a, b) => a - b);
  for (const length of lengths) {
    const ttfts = sessions.filter((s) => s.promptTokens === length).map((s) => s.ttft);
    out[length] = { sessions: ttfts.length, mean: round(mean(ttfts)) };
  }
  return out;
}

function pathMeans(sessions: ReadonlyArray<{ path: TtftPath; deviceWaitMs: number }>): TtftPathMeans {
  const out = { sessions: sessions.length, deviceWaitMs: round(mean(sessions.map((s) => s.deviceWaitMs))) };
  const segments = Object.fromEntries(TTFT_SEGMENTS.map((k) => [k, round(mean(sessions.map((s) => s.path[k])))]));
  return { ...out, ...(segments as unknown as TtftPath) };
}

/** TTFT paths of the completed sessions that have one, overall and by prompt length. */
function ttftPaths(sessions: readonly LoadRun['sessions'][number][]): FleetRunStats['ttftPath'] {
  const withPath = sessions.flatMap((s) =>
    s.ttftPath ? [{ path: s.ttftPath, deviceWaitMs: s.takenAt - s.arrivedAt, promptTokens: s.promptTokens }] : [],
  );
  if (withPath.length === 0) return undefined;
  const byPrompt: Record<string, TtftPathMeans> = {};
  for (const length of [...new Set(withPath.map((s) => s.promptTokens))].sort((a, b) => a - b)) {
    byPrompt[length] = pathMeans(withPath.filter((s) => s.promptTokens === length));
  }
  return { all: pathMeans(withPath), byPrompt };
}

export function fleetRunStats(run: LoadRun, ctx: RunContext): FleetRunStats {
  const windowEnd = run.startedAt + run.durationMs;
  const ok = run.sessions.filter((s) => !s.error);
  const failed = run.sessions.filter((s) => s.error);
  const inWindow = run.sessions.flatMap((s) => s.commits).filter((c) => c.at >= run.startedAt && c.at < windowEnd);
  const perSession = ok.map((s) => {
    const commits = [...s.commits].sort((a, b) => a.at - b.at);
    const gaps = tokenGaps(commits);
    const ttft = s.takenAt - s.arrivedAt + (commits[0].at - s.startedAt);
    return { ttft, gaps, meanGap: gaps.length ? mean(gaps) : 0, promptTokens: s.promptTokens, arrival: s.arrival };
  });
  const met = perSession.filter((s) => s.ttft <= ctx.sloTtftMs && s.meanGap <= ctx.sloTbtMs).length;
  const rounds = decodeRounds(ok);
  const late = run.sessions.flatMap((s) => s.lateMs);
  const lateSummary = summarize(late);
  const delta = (name: string) => histogramDelta(histogram(ctx.before, name), histogram(ctx.after, name));
  const batch = delta('hat_cloud_batch_sessions');
  const padding = delta('hat_cloud_batch_padding_ratio');
  const queue = delta('hat_cloud_queue_wait_seconds');
  const compute = delta('hat_cloud_compute_seconds');
  const realRows = counterDelta(ctx, 'hat_cloud_real_rows_total');
  const paddedRows = counterDelta(ctx, 'hat_cloud_padded_rows_total');
  const wallS = (run.endedAt - run.startedAt) / 1000;
  const distinctErrors = [...new Set(failed.map((s) => s.error!))].slice(0, 3);
  const arrivedPerSecond = run.sessions.filter((s) => s.arrivedAt < windowEnd).length / (run.durationMs / 1000);
  const chunkSeconds = counterDelta(ctx, 'hat_cloud_compute_seconds_sum', { class: 'chunk' });
  const smallSeconds = counterDelta(ctx, 'hat_cloud_compute_seconds_sum', { class: 'small' });
  const tokens = run.sessions.reduce((n, s) => n + s.commits.reduce((m, c) => m + c.count, 0), 0);
  const perToken = (seconds: number) => (tokens ? round((seconds * 1000) / tokens, 4) : 0);
  const rows = (cls: string) => counterDelta(ctx, 'hat_cloud_real_rows_total', { class: cls });
  const perRow = (seconds: number, cls: string) => {
    const padded = counterDelta(ctx, 'hat_cloud_padded_rows_total', { class: cls });
    return padded ? round((seconds * 1000) / padded, 4) : 0;
  };
  return {
    mode: ctx.mode,
    maxBatch: ctx.maxBatch,
    batching: ctx.maxBatch > 1 ? 'on' : 'off',
    load: ctx.load,
    offeredSessionsPerSecond: ctx.load.kind === 'poisson' ? ctx.load.rate : round(arrivedPerSecond, 2),
    arrivedSessionsPerSecond: round(arrivedPerSecond, 2),
    devices: ctx.devices,
    durationS: run.durationMs / 1000,
    sessions: { arrived: run.sessions.length, completed: ok.length, failed: failed.length },
    throughputTokensPerSecond: round(inWindow.reduce((n, c) => n + c.count, 0) / (run.durationMs / 1000), 2),
    ttftMs: summarize(perSession.map((s) => s.ttft)),
    ttftMsByPrompt: meansByPrompt(perSession),
    ttftPath: ttftPaths(ok),
    tbtMs: summarize(perSession.flatMap((s) => s.gaps)),
    sessionPoints: perSession.map((s) => ({
      arrival: s.arrival,
      promptTokens: s.promptTokens,
      ttftMs: round(s.ttft),
      gapSumMs: round(s.gaps.reduce((a, b) => a + b, 0)),
      gaps: s.gaps.length,
    })),
    // Not rounded: the sustained test (≥ 0.9, fleet-report.ts) would take 188 of 209 (0.8995) for 0.9.
    sloAttainment: run.sessions.length ? met / run.sessions.length : 0,
    rounds,
    meanDeviceWaitMs: round(mean(run.sessions.map((s) => s.takenAt - s.arrivedAt))),
    emulationLateMs: { p50: lateSummary.p50, p99: lateSummary.p99 },
    results: {
      checked: run.sessions.reduce((n, s) => n + s.checked, 0),
      identical: run.sessions.reduce((n, s) => n + s.identical, 0),
      maxAbsDiff: run.sessions.reduce((m, s) => Math.max(m, s.maxAbsDiff), 0),
    },
    advice: {
      splitRounds: run.sessions.reduce((n, s) => n + s.split.rounds, 0),
      into: run.sessions.reduce((n, s) => n + s.split.into, 0),
    },
    server: {
      cpuSeconds: ctx.cpuSeconds === null ? null : round(ctx.cpuSeconds, 2),
      busyCores: ctx.cpuSeconds === null || wallS <= 0 ? null : round(ctx.cpuSeconds / wallS, 2),
    },
    cost: {
      tokens,
      computeMsPerToken: perToken(compute.sum),
      chunkMsPerToken: perToken(chunkSeconds),
      smallMsPerToken: perToken(smallSeconds),
      cpuMsPerToken: ctx.cpuSeconds === null ? null : perToken(ctx.cpuSeconds),
      rowsPerToken: {
        chunk: tokens ? round(rows('chunk') / tokens, 4) : 0,
        small: tokens ? round(rows('small') / tokens, 4) : 0,
      },
      msPerPaddedRow: { chunk: perRow(chunkSeconds, 'chunk'), small: perRow(smallSeconds, 'small') },
    },
    cloud: {
      runs: batch.count,
      requests: {
        prefillChunk: counterDelta(ctx, 'hat_cloud_requests_total', { kind: 'prefill_chunk' }),
        verification: counterDelta(ctx, 'hat_cloud_requests_total', { kind: 'verification' }),
      },
      meanBatchSessions: batch.count ? round(batch.sum / batch.count, 2) : 0,
      paddingShare: paddedRows ? round((paddedRows - realRows) / paddedRows) : 0,
      batchSessions: batch,
      paddingRatio: padding,
      meanQueueWaitMs: queue.count ? round((queue.sum / queue.count) * 1000) : 0,
      queueWaitMsByKind: {
        prefillChunk: histogramMean(ctx, 'hat_cloud_queue_wait_seconds', { kind: 'prefill_chunk' }, 1000),
        verification: histogramMean(ctx, 'hat_cloud_queue_wait_seconds', { kind: 'verification' }, 1000),
      },
      computeSeconds: round(compute.sum, 3),
      computeSecondsByClass: { chunk: round(chunkSeconds, 3), small: round(smallSeconds, 3) },
      copySeconds: round(counterDelta(ctx, 'hat_cloud_batch_copy_seconds_total'), 3),
      inPlaceRuns: counterDelta(ctx, 'hat_cloud_batches_in_place_total'),
      costRefusedJoins: counterDelta(ctx, 'hat_cloud_cost_refused_joins_total'),
      kvRefusedJoins: counterDelta(ctx, 'hat_cloud_kv_refused_joins_total'),
      costRulePicks: {
        answered: counterDelta(ctx, 'hat_cloud_cost_rule_picks_total', { answer: 'answered' }),
        silent: counterDelta(ctx, 'hat_cloud_cost_rule_picks_total', { answer: 'silent' }),
      },
      errors: errorsByCode(ctx),
    },
    errors: distinctErrors,
  };
}
