/**
 * How far one run's hat / u-shape ratios of mean TTFT and mean TBT could move with which sessions happened to
 * arrive: a paired bootstrap over the run's arrivals. In a Poisson run the i-th arrival comes at the same time and
 * replays the same prompt in every configuration (load.ts: one seed, one recording order), so hat's arrival i and
 * u-shape's arrival i form a pair; resampling arrivals with replacement keeps the pairs, and with them the prompt
 * mix both sides share. A run of 37 sessions at 2/s holds a few 896-token prompts that meet a busy cloud, and its
 * means move with them. The interval covers that sampling only. Runs of the same arrivals vary more (the cloud's
 * speed drifts, and a busy queue amplifies small timing differences): repeat runs for that, `npm run
 * bench:fleet:spread`.
 */
import { seededUniform } from '../../runtime/sampling.ts';

/** One completed session, as the pairing needs it. */
export interface SessionPoint {
  /** Its place in the run's arrival order, from 0. */
  arrival: number;
  promptTokens: number;
  ttftMs: number;
  /** The sum of its per-token gaps after the first token, and how many (mean TBT weighs every token alike). */
  gapSumMs: number;
  gaps: number;
}

export interface RatioInterval {
  /** The ratio over every pair, and the bounds of the central `level` share of the resampled ratios. */
  ratio: number;
  low: number;
  high: number;
}

export interface PairedRatios {
  pairs: number;
  resamples: number;
  level: number;
  ttft: RatioInterval;
  /** Absent where no pair has a gap (one-token sessions). */
  tbt?: RatioInterval;
}

export const BOOTSTRAP_RESAMPLES = 2000;
export const BOOTSTRAP_LEVEL = 0.95;

/**
 * The paired intervals of hat's mean TTFT and mean TBT over u-shape's, or undefined where the runs do not pair: an
 * arrival that replayed different prompts in the two (other recordings, another seed), or fewer than two arrivals
 * completed in both. Arrivals completed in one run only are left out.
 */
export function pairedRatios(
  hat: readonly SessionPoint[],
  uShape: readonly SessionPoint[],
  options: { resamples?: number; level?: number; seed?: number } = {},
): PairedRatios | undefined {
  const resamples = options.resamples ?? BOOTSTRAP_RESAMPLES;
  const level = options.level ?? BOOTSTRAP_LEVEL;
  const other = new Map(uShape.map((s) => [s.arrival, s]));
  const pairs = hat.flatMap((h) => (other.has(h.arrival) ? [[h, other.get(h.arrival)!] as const] : []));
  if (pairs.length < 2 || pairs.some(([h, u]) => h.promptTokens !== u.promptTokens)) return undefined;
  const sums = (indices: readonly number[]) => {
    const s = { hatTtft: 0, uTtft: 0, hatGapMs: 0, hatGaps: 0, uGapMs: 0, uGaps: 0 };
    for (const i of indices) {
      const [h, u] = pairs[i];
      s.hatTtft += h.ttftMs;
      s.uTtft += u.ttftMs;
      s.hatGapMs += h.gapSumMs;
      s.hatGaps += h.gaps;
      s.uGapMs += u.gapSumMs;
      s.uGaps += u.gaps;
    }
    return s;
  };
  const ttftOf = (s: ReturnType<typeof sums>) => (s.uTtft > 0 ? s.hatTtft / s.uTtft : NaN);
  const tbtOf = (s: ReturnType<typeof sums>) =>
    s.hatGaps && s.uGaps && s.uGapMs > 0 ? s.hatGapMs / s.hatGaps / (s.uGapMs / s.uGaps) : NaN;
  const all = sums(pairs.map((_, i) => i));
  const random = seededUniform(options.seed ?? 1);
  const ttfts: number[] = [];
  const tbts: number[] = [];
  for (let r = 0; r < resamples; r++) {
    const drawn = sums(Array.from({ length: pairs.length }, () => Math.floor(random() * pairs.length)));
    ttfts.push(ttftOf(drawn));
    tbts.push(tbtOf(drawn));
  }
  const interval = (ratio: number, draws: number[]): RatioInterval | undefined => {
    const finite = draws.filter(Number.isFinite).sort((a, b) => a - b);
    if (!Number.isFinite(ratio) || finite.length === 0) return undefined;
    const at = (q: number) => finite[Math.min(finite.length - 1, Math.max(0, Math.round(q * (finite.length - 1))))];
    return { ratio, low: at((1 - level) / 2), high: at((1 + level) / 2) };
  };
  const ttft = interval(ttftOf(all), ttfts);
  if (!ttft) return undefined;
  const tbt = interval(tbtOf(all), tbts);
  return { pairs: pairs.length, resamples, level, ttft, ...(tbt ? { tbt } : {}) };
}
