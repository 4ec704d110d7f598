/**
 * What a run of the middle part costs, learnt from the runs a worker makes, so the scheduler batches only where
 * batching pays. A padded batch shares the weights and the per-run overhead, but every session's past is still read
 * (and copied) and every session pays for the padding up to the longest request and the longest past. On a small
 * middle part that often costs more than the sessions' separate runs: on the default model a fleet benchmark
 * measured u-shape's verifications at 7.18 s of compute batched against 4.91 s one by one at 4 sessions/s, where
 * most batches held two to four sessions with ragged pasts.
 *
 * Model, fitted on solo runs only: ms = f + a·R + c·P + d·R·P for one session of R rows on P past positions — per
 * run, per row (weights), per cache position (reading and copying the cache), per row × position (attention
 * scores, which dominate long prefill chunks) — by exponentially weighted least squares (recent runs count most, as
 * load and context lengths drift) with a small ridge. Solo runs make this identifiable where they span rows and pasts
 * independently (verifications and prompt chunks of sessions at many pasts); during long stretches of one-row steps
 * the split between the per-run and per-row terms rests on older, decayed chunk runs, and only the error gate below
 * guards the composition. A padded run of B sessions is then composed from it, as its
 * construction says it costs: one run's f, every session padded to the longest request R and the longest past P,
 * plus gathering each session's real past into the batch (g per position, measured on the batched runs that
 * gathered): f + B·(a·R + c·P + d·R·P) + g·Σpast. A fit on batched runs as well (the model before, 7 collinear
 * features) was off by half to 2× on a Qwen2.5-0.5B-shaped middle, and a rule that refused batches then saw only
 * solo runs and refused more.
 *
 * It answers once it has seen MIN_SOLO_RUNS solo runs, and only while its recent predictions of solo runs and of
 * batched runs were both within MAX_ERROR (batched runs that the composition mispredicts, e.g. where a run's cost
 * per row falls as rows are added, switch it off; the worker pool's exploration keeps batched runs measured).
 */

import { Ema } from '../ema.ts';

export interface RunShape {
  sessions: number;
  /** Rows of the largest request (every session is padded to it). */
  rows: number;
  /** Past of the longest session (every past is padded to it). */
  past: number;
  /** The sessions' real pasts summed (what a gather copies); absent: sessions × past. */
  pastSum?: number;
  /** A padded run fed its sessions' last presents where they lie, so nothing is gathered. */
  inPlace?: boolean;
}

const FEATURES = 4;
/** Each solo run's weight decays by this per later solo run: the last few hundred count. */
const HISTORY_WEIGHT = 0.995;
/** Solo runs (decayed count, so in practice one more) needed before the model answers. */
export const MIN_SOLO_RUNS = 8;
const RIDGE = 1e-6;
/** Mean relative error of recent predictions (each made just before its run was observed) above which none is given. */
export const MAX_ERROR = 0.25;

/** One session's run: [1, R, P, R·P]. */
function features(rows: number, past: number): number[] {
  return [1, rows, past, rows * past];
}

export class RunCostModel {
  private readonly xtx = Array.from({ length: FEATURES }, () => new Array<number>(FEATURES).fill(0));
  private readonly xty = new Array<number>(FEATURES).fill(0);
  private soloRuns = 0;
  private coefficients: number[] | undefined;
  /**
   * ms per gathered cache position, from the batched runs that gathered (0 until one did): their copyMs over the
   * positions gathered. copyMs is the engine's whole batch assembly (gathering pasts, building the other feeds,
   * splitting outputs, compacting caches), so this overstates the gather alone and a compaction spike lifts it for a
   * while; in-place runs, which assemble too, are modelled at 0.
   */
  private readonly gatherMs = new Ema(0.9);
  /** Smoothed |predicted − measured| / measured of solo and of batched runs seen while the model was ready. */
  private readonly error = { solo: new Ema(0.9), batched: new Ema(0.9) };

  /** A run of `shape` took `ms`, of which `copyMs` went on gathering pasts and copying caches (batched runs). */
  observe(shape: RunShape, ms: number, copyMs = 0): void {
    const predicted = this.fitted(shape);
    if (predicted !== undefined && ms > 0) {
      // Capped at 1, so one very fast run does not switch the rule off for dozens of runs.
      this.error[shape.sessions > 1 ? 'batched' : 'solo'].update(Math.min(1, Math.abs(predicted - ms) / ms));
    }
    if (shape.sessions > 1) {
      const gathered = gatheredPositions(shape);
      if (gathered > 0) this.gatherMs.update(copyMs / gathered);
      return;
    }
    const x = features(shape.rows, shape.past);
    for (let i = 0; i < FEATURES; i++) {
      this.xty[i] = HISTORY_WEIGHT * this.xty[i] + x[i] * ms;
      for (let j = 0; j < FEATURES; j++) this.xtx[i][j] = HISTORY_WEIGHT * this.xtx[i][j] + x[i] * x[j];
    }
    this.soloRuns = HISTORY_WEIGHT * this.soloRuns + 1;
    this.coefficients = undefined;
  }

  get ready(): boolean {
    return this.soloRuns >= MIN_SOLO_RUNS;
  }

  /** How far off recent predictions of solo and of batched runs were (mean relative error, each sample ≤ 1). */
  get recentErrors(): { solo?: number; batched?: number } {
    return { solo: this.error.solo.value, batched: this.error.batched.value };
  }

  /** The worse of the two, once it has made both kinds of prediction. */
  get recentError(): number | undefined {
    const { solo, batched } = this.recentErrors;
    return solo === undefined || batched === undefined ? undefined : Math.max(solo, batched);
  }

  /** Whether predict() answers now: enough solo runs seen, and recent predictions within MAX_ERROR. */
  get answering(): boolean {
    const error = this.recentError;
    return this.ready && error !== undefined && error <= MAX_ERROR;
  }

  /** Predicted ms of one run of this shape; undefined until the model is ready, and while it predicts badly. */
  predict(shape: RunShape): number | undefined {
    return this.answering ? this.fitted(shape) : undefined;
  }

  /** The composition's prediction once enough solo runs were seen, whatever its recent error. */
  private fitted(shape: RunShape): number | undefined {
    if (!this.ready) return undefined;
    this.coefficients ??= solve(this.xtx, this.xty);
    const [f, ...perSession] = this.coefficients;
    const session = features(shape.rows, shape.past)
      .slice(1)
      .reduce((sum, value, i) => sum + value * perSession[i], 0);
    const ms = f + shape.sessions * session + this.gatherMs.valueOr(0) * gatheredPositions(shape);
    return Number.isFinite(ms) ? ms : undefined;
  }
}

/** Cache positions a padded run copies into its batch before running (none alone or fed in place). */
function gatheredPositions(shape: RunShape): number {
  return shape.sessions > 1 && !shape.inPlace ? (shape.pastSum ?? shape.sessions * shape.past) : 0;
}

/** Solves (A + ridge·diag(A)) c = b by Gaussian elimination with partial pivoting (A is 4 × 4). */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row.map((v, j) => v + (i === j ? RIDGE * v : 0)), b[i]]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r][col]) > Math.abs(m[pivot][col])) pivot = r;
    [m[col], m[pivot]] = [m[pivot], m[col]];
    for (let r = col + 1; r < n; r++) {
      const factor = m[r][col] / m[col][col];
      for (let c = col; c <= n; c++) m[r][c] -= factor * m[col][c];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let sum = m[r][n];
    for (let c = r + 1; c < n; c++) sum -= m[r][c] * x[c];
    x[r] = sum / m[r][r];
  }
  return x;
}
