/** Aggregates RequestRecords into one result per scenario, with every ratio taken to u-shape. */
import { summarize, type Summary } from '../runtime/device/metrics.ts';
import type { RequestRecord } from './record.ts';
import type { Scenario } from './scenarios.ts';

export interface ScenarioResult {
  name: string;
  description: string;
  kind: Scenario['kind'];
  requests: number;
  failed: number;
  /** Null (as the per-request figures below) when no request of the scenario succeeded. */
  ttftMs: Summary | null;
  tbtMs: Summary | null;
  tokensPerRound: number | null;
  bytesUpPerToken: number;
  bytesDownPerToken: number;
  /** Generated tokens per second of wall time (see docs/benchmarks.md); null for device-only (no server). */
  serverTokensPerSecond: number | null;
  /** Share of requests with TTFT ≤ the SLO; a failed request is a miss. */
  sloAttainment: number;
  cloudComputeMsPerToken: number | null;
  cloudQueueMsPerRequest: number | null;
  parallelDraftHitRate: number | null;
  meanWaitMs: number;
  /** TTFT and TBT means per prompt length. */
  byPromptLength: Array<{ promptTokens: number; requests: number; ttftMs: number; tbtMs: number }>;
  /** This scenario's figure / u-shape's, for each figure above (lower is better except throughput and SLO). */
  ratioToUShape?: Record<string, number | null>;
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const mean = (xs: readonly number[]) => (xs.length ? sum(xs) / xs.length : 0);

/**
 * `wallMs`: the span the scenario's requests ran in (open loop), or undefined in closed loop, where throughput
 * is each device's tokens per busy second times the number of devices.
 */
export function aggregate(
  scenario: Scenario,
  records: readonly RequestRecord[],
  options: { sloTtftMs: number; devices: number; wallMs?: number },
): ScenarioResult {
  const ok = records.filter((r) => !r.error);
  const tokens = sum(ok.map((r) => r.tokens));
  const rounds = sum(ok.map((r) => r.rounds));
  const branches = sum(ok.map((r) => r.parallelDrafting.branches));
  // A failed request held its device too: closed-loop throughput counts that time.
  const busyMs = sum(records.map((r) => r.durationMs));
  const throughput =
    scenario.kind === 'device-only' || !tokens
      ? null
      : options.wallMs !== undefined
        ? tokens / (options.wallMs / 1000)
        : (tokens / (busyMs / 1000)) * options.devices;
  const lengths = [...new Set(ok.map((r) => r.promptTokens))].sort((a, b) => a - b);
  return {
    name: scenario.name,
    description: scenario.description,
    kind: scenario.kind,
    requests: ok.length,
    failed: records.length - ok.length,
    ttftMs: ok.length ? summarize(ok.map((r) => r.ttftMs)) : null,
    tbtMs: ok.length ? summarize(ok.flatMap((r) => r.gapsMs)) : null,
    tokensPerRound: rounds ? round((tokens - ok.length) / rounds) : ok.length ? 1 : null,
    bytesUpPerToken: tokens ? round(sum(ok.map((r) => r.bytesUp)) / tokens, 1) : 0,
    bytesDownPerToken: tokens ? round(sum(ok.map((r) => r.bytesDown)) / tokens, 1) : 0,
    serverTokensPerSecond: throughput === null ? null : round(throughput, 2),
    sloAttainment: records.length ? round(ok.filter((r) => r.ttftMs <= options.sloTtftMs).length / records.length) : 0,
    cloudComputeMsPerToken: tokens ? round(sum(ok.map((r) => r.cloudComputeMs)) / tokens) : null,
    cloudQueueMsPerRequest: ok.length ? round(mean(ok.map((r) => r.cloudQueueMs))) : null,
    parallelDraftHitRate: branches ? round(sum(ok.map((r) => r.parallelDrafting.hits)) / branches) : null,
    meanWaitMs: round(mean(ok.map((r) => r.waitMs))),
    byPromptLength: lengths.map((length) => {
      const group = ok.filter((r) => r.promptTokens === length);
      return {
        promptTokens: length,
        requests: group.length,
        ttftMs: round(mean(group.map((r) => r.ttftMs))),
        tbtMs: round(mean(group.flatMap((r) => r.gapsMs))),
      };
    }),
  };
}

const RATIO_FIELDS: Array<[string, (r: ScenarioResult) => number | null]> = [
  ['ttftMean', (r) => r.ttftMs?.mean ?? null],
  ['ttftP50', (r) => r.ttftMs?.p50 ?? null],
  ['ttftP90', (r) => r.ttftMs?.p90 ?? null],
  ['ttftP99', (r) => r.ttftMs?.p99 ?? null],
  ['tbtMean', (r) => r.tbtMs?.mean ?? null],
  ['tbtP50', (r) => r.tbtMs?.p50 ?? null],
  ['tbtP90', (r) => r.tbtMs?.p90 ?? null],
  ['tbtP99', (r) => r.tbtMs?.p99 ?? null],
  ['tokensPerRound', (r) => r.tokensPerRound],
  ['bytesUpPerToken', (r) => r.bytesUpPerToken],
  ['bytesDownPerToken', (r) => r.bytesDownPerToken],
  ['serverTokensPerSecond', (r) => r.serverTokensPerSecond],
  ['sloAttainment', (r) => r.sloAttainment],
];

/** Adds `ratioToUShape` to every result (null where either side is null or u-shape's figure is 0). */
export function withRatios(results: readonly ScenarioResult[], baseline: string): ScenarioResult[] {
  const base = results.find((r) => r.name === baseline);
  return results.map((r) => ({
    ...r,
    ratioToUShape: base
      ? Object.fromEntries(
          RATIO_FIELDS.map(([key, get]) => {
            const a = get(r),
              b = get(base);
            return [key, a === null || b === null || b === 0 ? null : round(a / b)];
          }),
        )
      : undefined,
  }));
}
