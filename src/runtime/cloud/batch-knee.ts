/**
 * serve-cloud's default --max-batch-tokens, measured at start on the middle part it serves: a run's cost per row
 * falls as rows are added (the part's weights are read once per run) until the run is compute-bound — the knee.
 * A batch budget below the knee leaves throughput unused under load; far past it, runs only grow longer (every
 * session in them waits for the whole run). The knee depends on the part and the machine, so it is measured rather
 * than assumed: on this 2-core VM with one intra-op thread, a Qwen2.5-0.5B-shaped 22-layer middle cost 12.3 ms per
 * row in a padded run of 10 rows, 6.7 at 40 and 4.7 at 80 (`npm run bench:kv -- --split <split> --sessions 2,4,8,16
 * --rows 5 --past 128 --threads 1 --gather`), while the default split's is within 25 % of its cheapest at 32 rows.
 */

/** Rows per probe run, smallest first: one session's rows on an empty cache, the shape of a GEMM of that many rows. */
export const KNEE_PROBE_ROWS = [8, 16, 32, 64, 128];

/** A run is at the knee once its cost per row is within this share of the cheapest row measured. */
export const KNEE_TOLERANCE = 0.25;

export interface ProbeTime {
  rows: number;
  ms: number;
}

const perRow = (t: ProbeTime) => t.ms / t.rows;

/** The timed probe runs, fewest rows first, and the one that cost least per row (undefined when none was timed). */
function measuredRuns(times: readonly ProbeTime[]): { measured: ProbeTime[]; cheapest: ProbeTime } | undefined {
  const measured = times.filter((t) => t.rows > 0 && t.ms > 0).sort((a, b) => a.rows - b.rows);
  if (!measured.length) return undefined;
  return { measured, cheapest: measured.reduce((a, b) => (perRow(b) < perRow(a) ? b : a)) };
}

/** The knee, and whether the probe bracketed it (a larger size probed cost more per row than the cheapest). */
function kneeIn(times: readonly ProbeTime[]): { knee: number; bracketed: boolean } | undefined {
  const runs = measuredRuns(times);
  if (!runs) return undefined;
  const { measured, cheapest } = runs;
  const knee = measured.find((t) => perRow(t) <= perRow(cheapest) * (1 + KNEE_TOLERANCE))!.rows;
  return { knee, bracketed: cheapest !== measured[measured.length - 1] };
}

/** The cheapest cost per row the probe measured, ms (undefined when nothing was measured). */
export function cheapestMsPerRow(times: readonly ProbeTime[]): number | undefined {
  const runs = measuredRuns(times);
  return runs && perRow(runs.cheapest);
}

/** The fewest rows whose cost per row is within KNEE_TOLERANCE of the cheapest per-row cost probed. */
export function kneeOf(times: readonly ProbeTime[]): number | undefined {
  return kneeIn(times)?.knee;
}

/**
 * The batch budget from the probe: the knee, or where cost per row was still falling at the largest size probed (the
 * knee lies beyond it, as with many intra-op threads) at least `fallback` — the budget serve-cloud used before it
 * measured. Undefined when nothing was measured.
 */
export function budgetFromProbe(
  times: readonly ProbeTime[],
  fallback: number,
): { rows: number; bracketed: boolean } | undefined {
  const found = kneeIn(times);
  if (!found) return undefined;
  const { knee, bracketed } = found;
  return { rows: bracketed ? knee : Math.max(knee, fallback), bracketed };
}

/** A probe run slower than this ends the probe: larger sizes would only take longer to start serve-cloud. */
export const PROBE_RUN_LIMIT_MS = 1000;

/**
 * Rounds over every probe size; each size keeps its fastest run. Sizes are interleaved, round after round, so that a
 * slow spell of the machine (this VM's timings swing by a third between identical runs) costs one sample of several
 * sizes rather than every sample of one (before, each size took its best of two back-to-back runs). It does not make
 * the budget stable where a size sits near KNEE_TOLERANCE: the default split's 32 rows measured 1.24–1.59× the
 * cheapest row over eight starts in a row on this VM, and the budget came out 64 seven times, 32 once.
 */
export const PROBE_ROUNDS = 3;

/**
 * Times `rows` (smallest first) by `timeRun` after one warm-up run (onnxruntime's first run allocates): PROBE_ROUNDS
 * interleaved rounds, each size its fastest. A size whose best of at least two runs takes longer than
 * PROBE_RUN_LIMIT_MS is the last one probed: one slow run (a size's first is its first run at that shape) does not
 * cut the probe, and a size that once ran within the limit is never dropped.
 */
export async function probeTimes(
  rows: readonly number[],
  timeRun: (rows: number) => Promise<number>,
): Promise<ProbeTime[]> {
  if (!rows.length) return [];
  await timeRun(rows[0]);
  const best = new Map<number, number>();
  const sample = async (n: number) => best.set(n, Math.min(best.get(n) ?? Infinity, await timeRun(n)));
  let sizes = [...rows];
  for (let round = 0; round < PROBE_ROUNDS; round++) {
    for (const [i, n] of sizes.entries()) {
      await sample(n);
      if (round === 0 && best.get(n)! > PROBE_RUN_LIMIT_MS) await sample(n);
      if (best.get(n)! > PROBE_RUN_LIMIT_MS) {
        sizes = sizes.slice(0, i + 1);
        break;
      }
    }
  }
  return sizes.map((n) => ({ rows: n, ms: best.get(n)! }));
}

/** The probe's rows that fit a session's context. */
export function probeRows(maxContext: number): number[] {
  return KNEE_PROBE_ROWS.filter((rows) => rows <= maxContext);
}
