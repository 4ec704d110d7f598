/**
 * The fleet benchmark's ratios over repeated runs of the same recordings (scripts/bench-fleet-spread.ts). On this
 * VM one run's ratios move by a fifth or more between identical runs, so a single run cannot tell a target met
 * from one missed by less than that; the median and the range over several runs can. Ratios are those of the
 * report (fleet-report.ts): window = batched tok/s over `--max-batch 1` tok/s, capacity = `--max-batch 1` compute
 * per committed token over batched, and hat's mean TTFT and mean TBT over u-shape's at each Poisson rate.
 */
import { highestSustained, loadLabel, sustained } from './fleet-report.ts';
import type { FleetRunStats } from './fleet-metrics.ts';

export interface Spread {
  values: number[];
  median: number;
  min: number;
  max: number;
}

export interface FleetSpread {
  repeats: number;
  sessions: { arrived: number; failed: number };
  /** Runs with failed sessions (repeat from 1): their ratios still count, so the rendering names them. */
  failedRuns: Array<{ repeat: number; mode: string; batching: 'on' | 'off'; load: string; failed: number; of: number }>;
  /** Batching on over `--max-batch 1`, per mode and load. */
  batching: Array<{ mode: string; load: string; window: Spread; capacity: Spread }>;
  /**
   * hat over u-shape at each Poisson rate, per batching setting; `sustained` counts the repeats in which u-shape
   * sustained that rate (the report's rule, fleet-report.ts `sustained`).
   */
  versusUShape: Array<{ batching: 'on' | 'off'; load: string; ttft: Spread; tbt: Spread; sustained: number }>;
  /**
   * What the targets are about: hat over u-shape at the highest Poisson rate u-shape sustained in each run (the
   * report's rule), which can differ between runs; `loads` is that rate per counted run, in run order. Runs where
   * u-shape sustained none, or hat has no run at that rate, are left out.
   */
  atLimit: Array<{ batching: 'on' | 'off'; loads: string[]; ttft: Spread; tbt: Spread }>;
  /**
   * Each configuration's own figures per load (means over its sessions; compute per committed token): what two
   * serve-cloud settings alternated with --versus are compared on, since each arm's ratios share nothing with the
   * other's u-shape or `--max-batch 1` runs.
   */
  figures: Array<{
    mode: string;
    batching: 'on' | 'off';
    load: string;
    tokensPerSecond: Spread;
    ttftMs: Spread;
    tbtMs: Spread;
    computeMsPerToken: Spread;
  }>;
}

/**
 * The arm of each run when two configurations alternate, `perArm` runs each: a, b, b, a, a, b, b, a, … — so a drift of
 * the machine's speed over the runs (this VM has slow stretches of many minutes) weighs on both arms alike.
 */
export function alternatingArms(perArm: number): Array<'a' | 'b'> {
  return Array.from({ length: 2 * perArm }, (_, i) => (((i + 1) >> 1) % 2 === 0 ? 'a' : 'b'));
}

export function spreadOf(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { values: [...values], median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/** `repeats[i]` holds every run of repeat i (results.json `runs`); a ratio is kept where every repeat has it. */
export function fleetSpread(repeats: ReadonlyArray<readonly FleetRunStats[]>): FleetSpread {
  const find = (runs: readonly FleetRunStats[], mode: string, batching: string, load: string) =>
    runs.find((r) => r.mode === mode && r.batching === batching && loadLabel(r) === load);
  const first = repeats[0] ?? [];
  const keys = (filter: (r: FleetRunStats) => boolean, key: (r: FleetRunStats) => string) => [
    ...new Set(first.filter(filter).map(key)),
  ];
  const collect = (ratio: (runs: readonly FleetRunStats[]) => number | undefined): Spread | undefined => {
    const values = repeats.map(ratio);
    return values.every((v) => v !== undefined && Number.isFinite(v)) ? spreadOf(values as number[]) : undefined;
  };

  const batching: FleetSpread['batching'] = [];
  for (const key of keys(
    (r) => r.batching === 'on',
    (r) => `${r.mode}\n${loadLabel(r)}`,
  )) {
    const [mode, load] = key.split('\n');
    const pair = (runs: readonly FleetRunStats[]) => {
      const on = find(runs, mode, 'on', load);
      const off = find(runs, mode, 'off', load);
      return on && off ? { on, off } : undefined;
    };
    const window = collect((runs) => {
      const p = pair(runs);
      return p && p.off.throughputTokensPerSecond > 0
        ? p.on.throughputTokensPerSecond / p.off.throughputTokensPerSecond
        : undefined;
    });
    const capacity = collect((runs) => {
      const p = pair(runs);
      return p && p.on.cost.computeMsPerToken > 0
        ? p.off.cost.computeMsPerToken / p.on.cost.computeMsPerToken
        : undefined;
    });
    if (window && capacity) batching.push({ mode, load, window, capacity });
  }

  const versusUShape: FleetSpread['versusUShape'] = [];
  for (const setting of ['on', 'off'] as const) {
    for (const load of keys(
      (r) => r.mode === 'hat' && r.batching === setting && r.load.kind === 'poisson',
      loadLabel,
    )) {
      const ratio = (pick: (r: FleetRunStats) => number) => (runs: readonly FleetRunStats[]) => {
        const hat = find(runs, 'hat', setting, load);
        const uShape = find(runs, 'u-shape', setting, load);
        return hat && uShape && pick(uShape) > 0 ? pick(hat) / pick(uShape) : undefined;
      };
      const ttft = collect(ratio((r) => r.ttftMs.mean));
      const tbt = collect(ratio((r) => r.tbtMs.mean));
      if (!ttft || !tbt) continue;
      const uShapeSustained = repeats.filter((runs) => {
        const u = find(runs, 'u-shape', setting, load);
        return u !== undefined && sustained(u);
      }).length;
      versusUShape.push({ batching: setting, load, ttft, tbt, sustained: uShapeSustained });
    }
  }

  const atLimit: FleetSpread['atLimit'] = [];
  for (const setting of ['on', 'off'] as const) {
    const limits = repeats.flatMap((runs) => {
      const limit = highestSustained(runs, setting);
      const { hat, uShape } = limit ?? {};
      return hat && uShape && uShape.ttftMs.mean > 0 && uShape.tbtMs.mean > 0 ? [{ hat, uShape }] : [];
    });
    if (limits.length === 0) continue;
    atLimit.push({
      batching: setting,
      loads: limits.map((l) => loadLabel(l.uShape)),
      ttft: spreadOf(limits.map((l) => l.hat.ttftMs.mean / l.uShape.ttftMs.mean)),
      tbt: spreadOf(limits.map((l) => l.hat.tbtMs.mean / l.uShape.tbtMs.mean)),
    });
  }

  const figures: FleetSpread['figures'] = [];
  for (const run of first) {
    const load = loadLabel(run);
    const of = (pick: (r: FleetRunStats) => number) =>
      collect((runs) => {
        const same = find(runs, run.mode, run.batching, load);
        return same && pick(same);
      });
    const tokensPerSecond = of((r) => r.throughputTokensPerSecond);
    const ttftMs = of((r) => r.ttftMs.mean);
    const tbtMs = of((r) => r.tbtMs.mean);
    const computeMsPerToken = of((r) => r.cost.computeMsPerToken);
    if (tokensPerSecond && ttftMs && tbtMs && computeMsPerToken) {
      figures.push({ mode: run.mode, batching: run.batching, load, tokensPerSecond, ttftMs, tbtMs, computeMsPerToken });
    }
  }

  const all = repeats.flat();
  const failedRuns = repeats.flatMap((runs, i) =>
    runs
      .filter((r) => r.sessions.failed > 0)
      .map((r) => ({
        repeat: i + 1,
        mode: r.mode,
        batching: r.batching,
        load: loadLabel(r),
        failed: r.sessions.failed,
        of: r.sessions.arrived,
      })),
  );
  return {
    repeats: repeats.length,
    sessions: {
      arrived: all.reduce((s, r) => s + r.sessions.arrived, 0),
      failed: all.reduce((s, r) => s + r.sessions.failed, 0),
    },
    failedRuns,
    batching,
    versusUShape,
    atLimit,
    figures,
  };
}

const x = (v: number) => `${v.toFixed(2)}×`;
const describe = (s: Spread, unit = x) =>
  `median ${unit(s.median)} (${unit(s.min)}–${unit(s.max)}; ${s.values.map(unit).join(', ')})`;
const fixed = (digits: number) => (v: number) => v.toFixed(digits);

export function renderSpread(spread: FleetSpread): string[] {
  const lines = [
    `${spread.repeats} repeats, ${spread.sessions.arrived} sessions, ${spread.sessions.failed} failed`,
    ...spread.failedRuns.map(
      (f) =>
        `- FAILED sessions in run ${f.repeat}: ${f.mode}, batching ${f.batching}, ${f.load}: ${f.failed} of ${f.of} ` +
        '(its ratios below still count)',
    ),
    'Batching on over --max-batch 1 (window: tok/s; capacity: compute per committed token):',
  ];
  for (const b of spread.batching) {
    lines.push(`- ${b.mode} at ${b.load}: window ${describe(b.window)}; capacity ${describe(b.capacity)}`);
  }
  if (spread.versusUShape.length) lines.push('hat over u-shape (mean TTFT, mean TBT) at each Poisson rate:');
  for (const v of spread.versusUShape) {
    lines.push(
      `- batching ${v.batching}, ${v.load} (u-shape sustained it in ${v.sustained} of ${spread.repeats}): ` +
        `TTFT ${describe(v.ttft)}; TBT ${describe(v.tbt)}`,
    );
  }
  if (spread.atLimit.length) lines.push('hat over u-shape at the highest Poisson rate u-shape sustained in each run:');
  for (const a of spread.atLimit) {
    lines.push(
      `- batching ${a.batching}, ${a.loads.length} of ${spread.repeats} runs (at ${a.loads.join(', ')}): ` +
        `TTFT ${describe(a.ttft)}; TBT ${describe(a.tbt)}`,
    );
  }
  if (spread.figures.length) lines.push('Each configuration (means over its sessions):');
  for (const f of spread.figures) {
    lines.push(
      `- ${f.mode}, batching ${f.batching}, ${f.load}: TTFT ms ${describe(f.ttftMs, fixed(1))}; ` +
        `TBT ms ${describe(f.tbtMs, fixed(2))}; tok/s ${describe(f.tokensPerSecond, fixed(1))}; ` +
        `compute ms per token ${describe(f.computeMsPerToken, fixed(3))}`,
    );
  }
  return lines;
}
