/**
 * What a run of the middle part costs, learnt from the runs a worker makes, so the scheduler batches only where
 * batching pays. A padded batch shares the weights and the per-run overhead, but every session's past is still read
 * (and copied) and every session pays for the padding up to the longest request and the longest past. On a small
 * middle part at long contexts that can cost more than the sessions' separate runs (the fleet benchmark measured
 * hat's batched verifications at 2.63 ms each against 2.44 ms one by one on the default model).
 *
 * Model: ms = c₀ + c₁·B + c₂·B·R + c₃·B·(P + R) + c₄·B·R·(P + R) + c₅·[B > 1] + c₆·[gathered]·B·P for B sessions
 * padded to R rows and P past positions — per run, per session, per padded row (weights), per padded cache
 * position (reading the cache), per query row × cache position (attention scores, which dominate long prefill
 * chunks), per padded run (masks, splitting outputs back) and per gathered cache position (a padded run not fed in
 * place first copies every past into one tensor; a session alone is fed its own cache) — fitted by exponentially
 * weighted least squares (recent runs count most, as load and context lengths drift) with a small ridge. It answers
 * only once it has seen enough runs of one session and of several, and only while it predicts both kinds of run it
 * then sees within MAX_ERROR. On a Qwen2.5-0.5B-shaped middle its fit was off by half to 2× (its solo runs are
 * mostly long prompt chunks, its batched ones short verifications at similar pasts, so the terms are barely
 * separable), and in the fleet benchmark it kept 286 verifications out of batches they fitted in one run where
 * every probe of the part said a run's fixed cost dominates. A rule that refuses batches then sees only solo runs,
 * predicts those well, and goes on refusing (3,674 refusals in a run where only solo runs were checked), so the
 * worker pool also lets every EXPLORE_EVERY-th batch form without it (worker-pool.ts), and the batched runs that
 * yields keep its batched error measured. Without an answer the scheduler batches whatever fits the limits.
 */

import { Ema } from '../ema.ts';

export interface RunShape {
  sessions: number;
  /** Rows of the largest request (every session is padded to it). */
  rows: number;
  /** Past of the longest session (every past is padded to it). */
  past: number;
  /** A padded run fed its sessions' last presents where they lie, so nothing is gathered. */
  inPlace?: boolean;
}

const FEATURES = 7;
/** Each observation's weight decays by this per later observation: the last few hundred runs count. */
const HISTORY_WEIGHT = 0.995;
/** Runs of one session and of several (decayed counts) needed before the model answers. */
const MIN_RUNS_EACH = 8;
const RIDGE = 1e-6;
/** Mean relative error of recent predictions (each made just before its run was observed) above which none is given. */
export const MAX_ERROR = 0.25;

function features({ sessions, rows, past, inPlace }: RunShape): number[] {
  const padded = sessions > 1 ? 1 : 0;
  const gathered = padded && !inPlace ? sessions * past : 0;
  return [1, sessions, sessions * rows, sessions * (past + rows), sessions * rows * (past + rows), padded, gathered];
}

export class RunCostModel {
  private readonly xtx = Array.from({ length: FEATURES }, () => new Array<number>(FEATURES).fill(0));
  private readonly xty = new Array<number>(FEATURES).fill(0);
  private soloRuns = 0;
  private batchedRuns = 0;
  private coefficients: number[] | undefined;
  /** Smoothed |predicted − measured| / measured of solo and of batched runs seen while the model was ready. */
  private readonly error = { solo: new Ema(0.9), batched: new Ema(0.9) };

  observe(shape: RunShape, ms: number): void {
    const predicted = this.fitted(shape);
    if (predicted !== undefined && ms > 0) {
      // Capped at 1, so one very fast run does not switch the rule off for dozens of runs.
      this.error[shape.sessions > 1 ? 'batched' : 'solo'].update(Math.min(1, Math.abs(predicted - ms) / ms));
    }
    const x = features(shape);
    for (let i = 0; i < FEATURES; i++) {
      this.xty[i] = HISTORY_WEIGHT * this.xty[i] + x[i] * ms;
      for (let j = 0; j < FEATURES; j++) this.xtx[i][j] = HISTORY_WEIGHT * this.xtx[i][j] + x[i] * x[j];
    }
    this.soloRuns = HISTORY_WEIGHT * this.soloRuns + (shape.sessions === 1 ? 1 : 0);
    this.batchedRuns = HISTORY_WEIGHT * this.batchedRuns + (shape.sessions > 1 ? 1 : 0);
    this.coefficients = undefined;
  }

  get ready(): boolean {
    return this.soloRuns >= MIN_RUNS_EACH && this.batchedRuns >= MIN_RUNS_EACH;
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

  /** Predicted ms of one run of this shape; undefined until the model is ready, and while it predicts badly. */
  predict(shape: RunShape): number | undefined {
    const error = this.recentError;
    if (error === undefined || error > MAX_ERROR) return undefined;
    return this.fitted(shape);
  }

  /** The fit's prediction once enough runs of each kind were seen, whatever its recent error. */
  private fitted(shape: RunShape): number | undefined {
    if (!this.ready) return undefined;
    this.coefficients ??= solve(this.xtx, this.xty);
    const ms = features(shape).reduce((sum, value, i) => sum + value * this.coefficients![i], 0);
    return Number.isFinite(ms) ? ms : undefined;
  }
}

/** Solves (A + ridge·diag(A)) c = b by Gaussian elimination with partial pivoting (A is 7 × 7). */
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
