/**
 * Exponentially smoothed estimates, as HAT monitors its state: est ← 0.8 · est + 0.2 · sample.
 */
export const HISTORY_WEIGHT = 0.8;

export class Ema {
  private estimate: number | undefined;
  private readonly historyWeight: number;

  constructor(historyWeight = HISTORY_WEIGHT, initial?: number) {
    this.historyWeight = historyWeight;
    this.estimate = initial;
  }

  update(sample: number): number {
    this.estimate =
      this.estimate === undefined ? sample : this.historyWeight * this.estimate + (1 - this.historyWeight) * sample;
    return this.estimate;
  }

  get value(): number | undefined {
    return this.estimate;
  }

  valueOr(fallback: number): number {
    return this.estimate ?? fallback;
  }
}

/**
 * g(X) = base + perToken · X fitted by exponentially weighted least squares over (tokens, ms) samples, so the
 * model follows load changes. Until two distinct sizes have been seen, the slope is the mean time per token.
 */
export class LinearLatencyModel {
  private sw = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;
  private readonly historyWeight: number;

  constructor(historyWeight = HISTORY_WEIGHT) {
    this.historyWeight = historyWeight;
  }

  observe(tokens: number, ms: number): void {
    const h = this.historyWeight;
    this.sw = h * this.sw + 1;
    this.sx = h * this.sx + tokens;
    this.sy = h * this.sy + ms;
    this.sxx = h * this.sxx + tokens * tokens;
    this.sxy = h * this.sxy + tokens * ms;
  }

  get coefficients(): { baseMs: number; perTokenMs: number } {
    if (this.sw === 0) return { baseMs: 0, perTokenMs: 0 };
    const meanX = this.sx / this.sw;
    const meanY = this.sy / this.sw;
    const varX = this.sxx / this.sw - meanX * meanX;
    if (varX < 1e-9 * Math.max(1, meanX * meanX)) return { baseMs: 0, perTokenMs: meanX > 0 ? meanY / meanX : 0 };
    const perTokenMs = Math.max(0, (this.sxy / this.sw - meanX * meanY) / varX);
    return { baseMs: Math.max(0, meanY - perTokenMs * meanX), perTokenMs };
  }

  predict(tokens: number): number {
    const { baseMs, perTokenMs } = this.coefficients;
    return baseMs + perTokenMs * tokens;
  }
}

/**
 * The share of recent wall time something was busy, exponentially weighted with time constant `tauMs`:
 * U(t) = (1/τ) ∫ busy(s) · e^{−(t−s)/τ} ds, with each busy period counted at its end. A period's weight decays with
 * how long ago it ended, not with how many came after it, so an idle stretch lowers the share as it should.
 */
export class BusyShare {
  private share = 0;
  private at: number | undefined;

  constructor(private readonly tauMs: number) {}

  /** A busy period of `busyMs` that ended at `now` (ms, a monotonic clock). */
  busy(now: number, busyMs: number): void {
    this.share = this.valueAt(now) + busyMs / this.tauMs;
    this.at = now;
  }

  /** The share at `now`: near 1 when busy all the time lately, 0 before anything ran. */
  valueAt(now: number): number {
    if (this.at === undefined) return 0;
    return this.share * Math.exp(-Math.max(0, now - this.at) / this.tauMs);
  }
}
