/** The fleet benchmark's printed report, results.json and SVG charts (vega-lite, rendered as `hat bench` does). */
import type { TopLevelSpec } from 'vega-lite';
import { render } from '../charts.ts';
import { f, headerLines, plain } from '../report.ts';
import type { FleetRunStats, TtftPathMeans } from './fleet-metrics.ts';
import type { HistogramCounts } from './prom-text.ts';
import type { FleetOptions, FleetReport } from './run-fleet.ts';
import { TTFT_SEGMENTS } from './ttft-path.ts';
import { pairedRatios, type RatioInterval } from './paired-ratio.ts';

const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
export const loadLabel = (r: FleetRunStats) => (r.load.kind === 'poisson' ? `${r.load.rate}/s` : 'closed loop');
const configLabel = (r: FleetRunStats) => `${r.mode}, batching ${r.batching}`;

function histogramLine(h: HistogramCounts, label: (le: number) => string): string {
  const parts = h.buckets.filter((b) => b.count > 0).map((b) => `${label(b.le)}:${b.count}`);
  return parts.length ? parts.join(' ') : '–';
}

export function runsTable(runs: readonly FleetRunStats[]): string {
  const t = plain([
    'mode',
    'max-batch',
    'load',
    'arrived/s',
    'ok/failed',
    'tok/s',
    'TTFT ms p50',
    'p90',
    'p99',
    'TBT ms p50',
    'p90',
    'p99',
    'SLO',
    'mean batch',
    'padding',
    'server CPU cores',
    'results = recording',
  ]);
  for (const r of runs) {
    t.push([
      r.mode,
      String(r.maxBatch),
      loadLabel(r),
      f(r.arrivedSessionsPerSecond, 2),
      `${r.sessions.completed}/${r.sessions.failed}`,
      f(r.throughputTokensPerSecond),
      f(r.ttftMs.p50),
      f(r.ttftMs.p90),
      f(r.ttftMs.p99),
      f(r.tbtMs.p50, 2),
      f(r.tbtMs.p90, 2),
      f(r.tbtMs.p99, 2),
      pct(r.sloAttainment),
      f(r.cloud.meanBatchSessions, 2),
      pct(r.cloud.paddingShare),
      f(r.server.busyCores, 2),
      r.results.checked
        ? `${r.results.identical}/${r.results.checked}${
            r.results.identical < r.results.checked ? ` (max |Δ| ${r.results.maxAbsDiff.toExponential(1)})` : ''
          }`
        : '–',
    ]);
  }
  return t.toString();
}

/** Batched over --max-batch 1 throughput, per mode and load (where both ran). */
export function speedups(runs: readonly FleetRunStats[]): string[] {
  const lines: string[] = [];
  for (const on of runs.filter((r) => r.batching === 'on')) {
    const off = runs.find((r) => r.batching === 'off' && r.mode === on.mode && loadLabel(r) === loadLabel(on));
    if (!off || !off.throughputTokensPerSecond) continue;
    const ratio = on.throughputTokensPerSecond / off.throughputTokensPerSecond;
    lines.push(
      `${on.mode} at ${loadLabel(on)}: batching on ${f(on.throughputTokensPerSecond)} tok/s vs --max-batch 1 ` +
        `${f(off.throughputTokensPerSecond)} tok/s = ${ratio.toFixed(2)}×`,
    );
  }
  return lines;
}

/**
 * Batched over --max-batch 1 capacity: the cloud's cost per committed token over every session of the run (window
 * and drain), compute and server CPU, split into prompt chunks and verifications; and the most batching could give
 * on this workload if verifications cost nothing and prompt chunks what they cost one by one.
 */
export function capacities(runs: readonly FleetRunStats[]): string[] {
  const lines: string[] = [];
  for (const on of runs.filter((r) => r.batching === 'on')) {
    const off = runs.find((r) => r.batching === 'off' && r.mode === on.mode && loadLabel(r) === loadLabel(on));
    if (!off?.cost?.tokens || !on.cost?.tokens) continue;
    const ratio = (a: number | null, b: number | null) => (a && b ? `${(b / a).toFixed(2)}×` : '–');
    const ms = (x: number | null) => (x === null ? '–' : f(x, 3));
    const ceiling = off.cost.chunkMsPerToken ? off.cost.computeMsPerToken / off.cost.chunkMsPerToken : Infinity;
    lines.push(
      `${on.mode} at ${loadLabel(on)}: ${ms(on.cost.computeMsPerToken)} vs ${ms(off.cost.computeMsPerToken)} ` +
        `compute ms per token = ${ratio(on.cost.computeMsPerToken, off.cost.computeMsPerToken)} ` +
        `(server CPU ${ms(on.cost.cpuMsPerToken)} vs ${ms(off.cost.cpuMsPerToken)} ms = ` +
        `${ratio(on.cost.cpuMsPerToken, off.cost.cpuMsPerToken)}); prompt chunks ${ms(on.cost.chunkMsPerToken)} vs ` +
        `${ms(off.cost.chunkMsPerToken)}, verifications ${ms(on.cost.smallMsPerToken)} vs ` +
        `${ms(off.cost.smallMsPerToken)} ms per token; at most ` +
        `${Number.isFinite(ceiling) ? `${ceiling.toFixed(2)}×` : '–'} if verifications cost nothing and prompt ` +
        'chunks what they cost one by one',
    );
    const floor = rowFloor(on, off);
    if (floor)
      lines.push(
        `${on.mode} at ${loadLabel(on)}, by rows: verifications carry ${f(on.cost.rowsPerToken.small, 2)} rows per ` +
          `committed token; at the cheapest cost per row of these two runs (${f(floor.msPerRow, 3)} ms, ` +
          `${floor.of}) they cost at least ${f(floor.smallMs, 3)} ms per token, so batching gives at most ` +
          `${(off.cost.computeMsPerToken / floor.totalMs).toFixed(2)}× at this acceptance`,
      );
  }
  return lines;
}

/**
 * The least a batched run could cost per committed token at the workload's acceptance: prompt chunks at the lower of
 * their two measured costs, and every verification row (drafts + 1, per committed token) at the cheapest cost per
 * computed row measured in either run — on one core that is a large prompt-chunk run's, where adding rows no longer
 * gets cheaper. Verifying drafts that get rejected costs rows; batching cannot make rows cheaper than that.
 */
function rowFloor(on: FleetRunStats, off: FleetRunStats) {
  const candidates = [
    { msPerRow: on.cost.msPerPaddedRow.chunk, of: 'prompt-chunk rows, batching on' },
    { msPerRow: off.cost.msPerPaddedRow.chunk, of: 'prompt-chunk rows, --max-batch 1' },
    { msPerRow: on.cost.msPerPaddedRow.small, of: 'verification rows, batching on' },
    { msPerRow: off.cost.msPerPaddedRow.small, of: 'verification rows, --max-batch 1' },
  ].filter((c) => c.msPerRow > 0);
  if (!candidates.length || !on.cost.rowsPerToken.small) return undefined;
  const cheapest = candidates.reduce((a, b) => (b.msPerRow < a.msPerRow ? b : a));
  const smallMs = on.cost.rowsPerToken.small * cheapest.msPerRow;
  const chunkMs = Math.min(on.cost.chunkMsPerToken, off.cost.chunkMsPerToken);
  return { ...cheapest, smallMs, totalMs: chunkMs + smallMs };
}

/** A load is sustained when at least this share of its sessions met the SLO and none failed (goodput-style). */
export const SUSTAINED_SLO_SHARE = 0.9;

export const sustained = (r: FleetRunStats) => r.sessions.failed === 0 && r.sloAttainment >= SUSTAINED_SLO_SHARE;

/** u-shape's run at the highest Poisson rate it sustained with this batching setting, and hat's at that rate. */
export function highestSustained(
  runs: readonly FleetRunStats[],
  batching: 'on' | 'off',
): { uShape: FleetRunStats; hat?: FleetRunStats } | undefined {
  const rate = (r: FleetRunStats) => (r.load.kind === 'poisson' ? r.load.rate : 0);
  const uShape = runs
    .filter((r) => r.mode === 'u-shape' && r.batching === batching && r.load.kind === 'poisson' && sustained(r))
    .sort((a, b) => rate(b) - rate(a))[0];
  if (!uShape) return undefined;
  const hat = runs.find((r) => r.mode === 'hat' && r.batching === batching && loadLabel(r) === loadLabel(uShape));
  return { uShape, hat };
}

/**
 * hat against u-shape where it matters: at the highest Poisson rate u-shape sustains, per batching setting, the
 * ratio of hat's mean TTFT and mean TBT to u-shape's at the same load.
 */
export function atHighestSustainedRate(runs: readonly FleetRunStats[]): string[] {
  const lines: string[] = [];
  for (const batching of ['on', 'off'] as const) {
    const limit = highestSustained(runs, batching);
    if (!limit) {
      lines.push(`batching ${batching}: u-shape sustained none of the Poisson rates run`);
      continue;
    }
    const { uShape: best, hat } = limit;
    const at = `batching ${batching}, ${loadLabel(best)} (the highest rate u-shape sustains)`;
    if (!hat) {
      lines.push(`${at}: no hat run at this load`);
      continue;
    }
    const [ttft, uTtft, tbt, uTbt] = [hat.ttftMs.mean, best.ttftMs.mean, hat.tbtMs.mean, best.tbtMs.mean];
    const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : '–');
    lines.push(
      `${at}: hat TTFT ${f(ttft)} ms vs u-shape ${f(uTtft)} ms = ${ratio(ttft, uTtft)}, ` +
        `TBT ${f(tbt, 2)} vs ${f(uTbt, 2)} ms = ${ratio(tbt, uTbt)} (means; hat ${pct(hat.sloAttainment)} within ` +
        `the SLO, ${hat.sessions.failed} failed)`,
    );
    const interval = pairedIntervalLine(hat, best);
    if (interval) lines.push(`  ${interval}`);
    const byPrompt = ttftByPrompt(hat, best);
    if (byPrompt) lines.push(`  ${byPrompt}`);
    for (const line of ttftDecomposition(hat, best)) lines.push(`  ${line}`);
    const decomposed = tbtDecomposition(hat, best);
    if (decomposed) lines.push(`  ${decomposed}`);
  }
  return lines;
}

/** How far the two ratios could move with the sessions that arrived (paired-ratio.ts); absent in older results. */
export function pairedIntervalLine(hat: FleetRunStats, uShape: FleetRunStats): string | undefined {
  if (!hat.sessionPoints || !uShape.sessionPoints) return undefined;
  const paired = pairedRatios(hat.sessionPoints, uShape.sessionPoints);
  if (!paired) return undefined;
  const range = (r: RatioInterval) => `${r.low.toFixed(2)}–${r.high.toFixed(2)}×`;
  return (
    `${pct(paired.level)} intervals over the arrivals (a paired bootstrap: the ${paired.pairs} arrivals both ` +
    `completed, each the same prompt at the same time in both, resampled ${paired.resamples.toLocaleString('en')} ` +
    `times; sampling within this run only; runs vary more than this): TTFT ${range(paired.ttft)}` +
    (paired.tbt ? `, TBT ${range(paired.tbt)}` : '')
  );
}

/** Mean TTFT per prompt length, hat against u-shape: where chunking gains and where it does not. */
export function ttftByPrompt(hat: FleetRunStats, uShape: FleetRunStats): string | undefined {
  const [h, u] = [hat.ttftMsByPrompt, uShape.ttftMsByPrompt];
  if (!h || !u) return undefined;
  const lengths = Object.keys(h).filter((length) => u[length]?.sessions && h[length].sessions);
  if (lengths.length === 0) return undefined;
  const parts = lengths.map((length) => {
    const [a, b] = [h[length].mean, u[length].mean];
    const ratio = b > 0 ? ` = ${(a / b).toFixed(2)}×` : '';
    return `${length} tokens ${f(a)} vs ${f(b)} ms${ratio} (${h[length].sessions} / ${u[length].sessions} sessions)`;
  });
  return `TTFT by prompt length, hat vs u-shape: ${parts.join('; ')}`;
}

/** The TTFT ratio the fleet target asks for (hat's mean TTFT at most this share of u-shape's). */
export const TTFT_TARGET = 0.6;

/**
 * Mean TTFT along the sessions' critical paths (ttft-path.ts), hat against u-shape, overall and by prompt length:
 * which segment keeps hat from the target, and by how much it misses.
 */
export function ttftDecomposition(hat: FleetRunStats, uShape: FleetRunStats): string[] {
  const [h, u] = [hat.ttftPath, uShape.ttftPath];
  if (!h || !u) return [];
  const total = (p: TtftPathMeans) => p.deviceWaitMs + TTFT_SEGMENTS.reduce((n, k) => n + p[k], 0);
  const path = (p: TtftPathMeans) =>
    `${f(total(p))} = device wait ${f(p.deviceWaitMs)} + device ${f(p.deviceMs)} + uplink ${f(p.uplinkMs)} + ` +
    `cloud queue ${f(p.cloudQueueMs)} + cloud compute ${f(p.cloudComputeMs)} + downlink and output ${f(p.afterMs)}`;
  const needs = TTFT_TARGET * total(u.all);
  const gap = total(h.all) - needs;
  // A what-if, not a bound: hat's ratio had its prompt spent what u-shape's did in the cloud and after it, with
  // nothing before the cloud — what hiding the device and the uplink alone gives. A chunked prompt can also get
  // through the cloud faster than a whole one (cheaper runs, or less of their compute on the path), and go lower.
  const cloudOnly = (u.all.cloudQueueMs + u.all.cloudComputeMs + u.all.afterMs) / total(u.all);
  // Every completed session has a path unless the replay missed an instant; say so when one did.
  const over = (p: TtftPathMeans, r: FleetRunStats) =>
    p.sessions === r.sessions.completed ? '' : ` (over ${p.sessions} of ${r.sessions.completed} sessions)`;
  const lines = [
    `TTFT along each session's critical path, ms (means): hat ${path(h.all)}${over(h.all, hat)}; ` +
      `u-shape ${path(u.all)}${over(u.all, uShape)}; ` +
      (gap > 0
        ? `TTFT ${TTFT_TARGET}× needs hat ≤ ${f(needs)} ms, ${f(gap)} ms less`
        : `within TTFT ${TTFT_TARGET}× (≤ ${f(needs)} ms)`) +
      `; with u-shape's time in the cloud and after it, and none before it, hat would be at ${cloudOnly.toFixed(2)}×`,
  ];
  for (const length of Object.keys(h.byPrompt)) {
    const [a, b] = [h.byPrompt[length], u.byPrompt[length]];
    if (a?.sessions && b?.sessions) lines.push(`  ${length} tokens: hat ${path(a)}; u-shape ${path(b)}`);
  }
  return lines;
}

/**
 * Mean TBT is a round's time over the tokens it commits, so hat's TBT ratio to u-shape's is the ratio of their
 * round times over the ratio of their tokens per round: which of the two a target needs, and how much.
 */
export function tbtDecomposition(hat: FleetRunStats, uShape: FleetRunStats): string | undefined {
  const [h, u] = [hat.rounds, uShape.rounds];
  if (!h?.count || !u?.count || !u.roundMs || !h.tokensPerRound || !u.tokensPerRound) return undefined;
  const round = (r: FleetRunStats['rounds']) =>
    `${f(r.tokensPerRound, 2)} tokens per ${f(r.roundMs, 2)} ms round (device ${f(r.deviceMs, 2)} ms, send to ` +
    `result ${f(r.roundTripMs, 2)} ms)`;
  const timeRatio = h.roundMs / u.roundMs;
  const tokensRatio = h.tokensPerRound / u.tokensPerRound;
  const needed = 2 * timeRatio * u.tokensPerRound;
  return (
    `TBT = round time / tokens per round: hat ${round(h)}, u-shape ${round(u)}; hat's rounds take ` +
    `${timeRatio.toFixed(2)}× as long and commit ${tokensRatio.toFixed(2)}× the tokens (${timeRatio.toFixed(2)} / ` +
    `${tokensRatio.toFixed(2)} = ${(timeRatio / tokensRatio).toFixed(2)}×); at these round times TBT 0.5× needs ` +
    `${needed.toFixed(2)} tokens per hat round`
  );
}

/** How often the cost rule answered when the scheduler asked it (--cost-rule on). */
function costRuleAnswers(r: FleetRunStats): string {
  const { answered = 0, silent = 0 } = r.cloud.costRulePicks ?? {};
  return answered + silent ? ` (it answered in ${answered} of the ${answered + silent} picks that asked it)` : '';
}

export function renderFleetReport(report: FleetReport): string {
  const h = report.header;
  const lines = [
    ...headerLines(report).map((l) => l.replace('# hat bench', '# hat bench --fleet')),
    `devices: ${h.devices}`,
    `cloud:   ${h.batching}`,
    `SLO:     ${h.slo}`,
    '',
  ];
  for (const note of report.notes) lines.push(`NOTE: ${note}`);
  if (report.notes.length) lines.push('');
  lines.push('Recorded sessions replayed (real devices of this split, recorded solo):');
  for (const r of report.recordings) {
    lines.push(
      `- ${r.mode}: ${r.sessions} sessions, prompts ${r.promptTokens.join('/')} tokens, ` +
        `${r.tokens} tokens in ${r.rounds} rounds (${r.tokensPerRound.toFixed(2)} tokens per round)` +
        (r.synthetic ? ` — SYNTHETIC rounds: ${r.synthetic}` : ''),
    );
  }
  lines.push(
    '',
    'Measured: a real serve-cloud process; EMULATED devices and link (per run, over the sessions that arrived in it):',
    runsTable(report.runs),
    '',
    'Batching on / --max-batch 1, cloud throughput (committed tokens/s):',
    ...speedups(report.runs).map((l) => `- ${l}`),
    '',
    'Batching on / --max-batch 1, capacity (cloud cost per committed token over every session of the run, window ' +
      "and drain; a saturated cloud serves 1 / cost per core, without the window's start-up transient):",
    ...capacities(report.runs).map((l) => `- ${l}`),
    '',
    `hat / u-shape at the highest Poisson rate u-shape sustains (≥ ${pct(SUSTAINED_SLO_SHARE)} of sessions within ` +
      'the SLO, none failed):',
    ...atHighestSustainedRate(report.runs).map((l) => `- ${l}`),
    '',
    "Per run, from serve-cloud's /metrics (runs by sessions per run; runs by share of padded rows):",
  );
  for (const r of report.runs) {
    lines.push(
      `- ${configLabel(r)} (max-batch ${r.maxBatch}), ${loadLabel(r)}: ${r.cloud.runs} runs, ` +
        `${r.cloud.requests.prefillChunk} prefill chunks + ${r.cloud.requests.verification} verifications, ` +
        `queue wait ${f(r.cloud.meanQueueWaitMs, 2)} ms mean (prefill chunks ` +
        `${f(r.cloud.queueWaitMsByKind.prefillChunk, 2)}, ` +
        `verifications ${f(r.cloud.queueWaitMsByKind.verification, 2)}), ` +
        `compute ${f(r.cloud.computeSeconds, 2)} s (chunk runs ${f(r.cloud.computeSecondsByClass.chunk, 2)}, ` +
        `small runs ${f(r.cloud.computeSecondsByClass.small, 2)}; cache copies ${f(r.cloud.copySeconds, 2)}; ` +
        `${r.cloud.inPlaceRuns ?? 0} runs fed their pasts in place; ` +
        `${r.cloud.costRefusedJoins ?? 0} joins the cost rule refused${costRuleAnswers(r)}, ` +
        `${r.cloud.kvRefusedJoins ?? 0} --kv-memory refused), ` +
        `server CPU ${f(r.server.cpuSeconds, 2)} s` +
        (r.advice.splitRounds
          ? `; SIMULATION: ${r.advice.splitRounds} recorded rounds over the cloud's rows advice sent as ` +
            `${r.advice.into} (cut where drafts were rejected, split where they were kept)`
          : ''),
    );
    const sessions = histogramLine(r.cloud.batchSessions, (le) => (le === Infinity ? '>64' : `≤${le}`));
    const padding = histogramLine(r.cloud.paddingRatio, (le) => (le === 0 ? '0' : le === Infinity ? '>1' : `≤${le}`));
    lines.push(`    batch sessions ${sessions}`, `    padding share  ${padding}`);
  }
  lines.push(
    '',
    'Definitions: tok/s = tokens committed inside the window / the window; TTFT from arrival (waiting for ' +
      'a free EMULATED device included, the WebSocket handshake not); ' +
      "TBT = a round's time / the tokens it committed; " +
      'cost per token = compute (or CPU) over the whole run / tokens committed by all its sessions; ' +
      '"results = recording": results byte-identical to the solo recording ' +
      '(a padded batch can differ from a solo run ' +
      'in the last bits of fp32, which an fp16 or int8 wire can round to one step of its own).',
  );
  return lines.join('\n');
}

export function fleetResultsJson(report: FleetReport, options: FleetOptions): string {
  return `${JSON.stringify(
    {
      header: report.header,
      notes: report.notes,
      options: { ...options, link: report.header.link },
      recordings: report.recordings,
      runs: report.runs,
    },
    null,
    2,
  )}\n`;
}

function lineSpec(runs: readonly FleetRunStats[], field: string, title: unknown, yTitle: string): TopLevelSpec {
  const values = runs.map((r) => ({
    configuration: configLabel(r),
    load: r.offeredSessionsPerSecond,
    loop: r.load.kind === 'poisson' ? 'Poisson' : 'closed loop',
    value: field === 'throughput' ? r.throughputTokensPerSecond : r.tbtMs.p99,
  }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 380,
    height: 220,
    data: { values },
    mark: { type: 'line', point: { filled: true, size: 50 } },
    encoding: {
      x: { field: 'load', type: 'quantitative', title: 'offered load (sessions/s; closed loop: as achieved)' },
      y: { field: 'value', type: 'quantitative', title: yTitle },
      color: { field: 'configuration', type: 'nominal', title: null },
      shape: { field: 'loop', type: 'nominal', title: null },
    },
  } as TopLevelSpec;
}

/** File name → SVG: throughput and p99 TBT against offered load, one line per mode × batching. */
export async function renderFleetCharts(report: FleetReport): Promise<Record<string, string>> {
  const model = report.header.model.split(':')[0];
  const subtitle = `${model} — EMULATED devices and link — ${report.header.date.slice(0, 10)}`;
  const title = (text: string) => ({ text, subtitle, subtitleFontSize: 9 });
  return {
    'fleet-throughput.svg': await render(
      lineSpec(report.runs, 'throughput', title('Cloud throughput vs offered load'), 'committed tokens/s'),
    ),
    'fleet-tbt-p99.svg': await render(
      lineSpec(report.runs, 'tbt', title('p99 time between tokens vs offered load'), 'p99 TBT (ms)'),
    ),
  };
}
