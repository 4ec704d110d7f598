/**
 * The `linear` adapter: h_N ≈ h_K·W + b by ridge regression, solved in closed form. Only sufficient
 * statistics are kept (Σx, Σy, XᵀX, XᵀY: O(hidden²) whatever the amount of data), accumulated batch by batch
 * in float64, and solved by Cholesky. Deterministic: the same batches in the same order give the same W.
 *
 * Data are shifted by the first batch's means before accumulating, so centring at the end does not cancel
 * catastrophically on hidden states with large offsets (Llama's "massive activations").
 */
import { HatError } from '../errors.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { choleskyInPlace, choleskySolveInPlace } from './cholesky.ts';
import { jsMatMul, type MatMulEngine } from './matmul.ts';
import type { PairSource } from './pair-source.ts';

export interface LinearAdapter {
  hidden: number;
  /** [hidden, hidden] (x·W layout). */
  weight: Float32Array;
  bias: Float32Array;
}

export class RidgeAccumulator {
  private readonly xx: Float64Array;
  private readonly xy: Float64Array;
  private readonly sumX: Float64Array;
  private readonly sumY: Float64Array;
  private shiftX?: Float32Array;
  private shiftY?: Float32Array;
  private count = 0;

  constructor(
    readonly hidden: number,
    private readonly engine: MatMulEngine = jsMatMul,
  ) {
    this.xx = new Float64Array(hidden * hidden);
    this.xy = new Float64Array(hidden * hidden);
    this.sumX = new Float64Array(hidden);
    this.sumY = new Float64Array(hidden);
  }

  get rows(): number {
    return this.count;
  }

  /** Adds rows of inputs and targets, each [rows, hidden]. */
  async add(inputs: Float32Array, targets: Float32Array): Promise<void> {
    const d = this.hidden;
    const rows = inputs.length / d;
    if (!Number.isInteger(rows) || targets.length !== inputs.length) {
      throw new HatError(
        'INTERNAL',
        `ridge batch of ${inputs.length} inputs and ${targets.length} targets does not fit width ${d}`,
      );
    }
    if (rows === 0) return;
    this.shiftX ??= columnMeans(inputs, d);
    this.shiftY ??= columnMeans(targets, d);
    const x = shifted(inputs, this.shiftX);
    const y = shifted(targets, this.shiftY);
    const [xx, xy] = await Promise.all([
      this.engine.matmul(x, x, { m: d, k: rows, n: d, transA: true }),
      this.engine.matmul(x, y, { m: d, k: rows, n: d, transA: true }),
    ]);
    for (let i = 0; i < xx.length; i++) {
      this.xx[i] += xx[i];
      this.xy[i] += xy[i];
    }
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < d; c++) {
        this.sumX[c] += x[r * d + c];
        this.sumY[c] += y[r * d + c];
      }
    }
    this.count += rows;
  }

  /**
   * W = (Cxx + λI)⁻¹·Cxy on centred statistics, b = ȳ − x̄·W; λ = ridge · mean eigenvalue of Cxx, so the
   * strength does not depend on the scale of the hidden states. The bias is not regularised.
   */
  solve(ridge = 1e-3): LinearAdapter {
    const d = this.hidden;
    if (this.count === 0)
      throw new HatError('BAD_OPTION', 'the linear adapter got no training data', 'give it a corpus with text');
    const n = this.count;
    const meanX = Array.from(this.sumX, (s) => s / n);
    const meanY = Array.from(this.sumY, (s) => s / n);
    const a = new Float64Array(d * d);
    const b = new Float64Array(d * d);
    let trace = 0;
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        a[i * d + j] = this.xx[i * d + j] - n * meanX[i] * meanX[j];
        b[i * d + j] = this.xy[i * d + j] - n * meanX[i] * meanY[j];
      }
      trace += a[i * d + i];
    }
    const lambda = Math.max(ridge * (trace / d), 1e-12);
    for (let i = 0; i < d; i++) a[i * d + i] += lambda;
    choleskyInPlace(a, d);
    choleskySolveInPlace(a, d, b, d);
    // Undo the shifts: y − sy = (x − sx − x̄)·W + ȳ  ⇒  b = sy + ȳ − (sx + x̄)·W.
    const bias = new Float32Array(d);
    for (let j = 0; j < d; j++) {
      let value = this.shiftY![j] + meanY[j];
      for (let i = 0; i < d; i++) value -= (this.shiftX![i] + meanX[i]) * b[i * d + j];
      bias[j] = value;
    }
    return { hidden: d, weight: Float32Array.from(b), bias };
  }
}

function columnMeans(values: Float32Array, width: number): Float32Array {
  const rows = values.length / width;
  const sums = new Float64Array(width);
  for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) sums[c] += values[r * width + c];
  return Float32Array.from(sums, (s) => s / rows);
}

function shifted(values: Float32Array, shift: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i] - shift[i % shift.length];
  return out;
}

/** y = x·W + b for x [rows, hidden]. */
export async function linearForward(
  adapter: LinearAdapter,
  x: Float32Array,
  engine: MatMulEngine = jsMatMul,
): Promise<Float32Array> {
  const d = adapter.hidden;
  const out = await engine.matmul(x, adapter.weight, { m: x.length / d, k: d, n: d });
  for (let i = 0; i < out.length; i++) out[i] += adapter.bias[i % d];
  return out;
}

/** One streamed pass over the source, then the closed-form solve. */
export async function fitLinearAdapter(
  source: PairSource,
  options: { ridge?: number; engine?: MatMulEngine } = {},
  reporter: Reporter = silentReporter,
): Promise<LinearAdapter> {
  const accumulator = new RidgeAccumulator(source.hidden, options.engine);
  const progress = reporter.progress('fitting the linear adapter');
  let index = 0;
  try {
    for await (const batch of source.batches()) {
      await accumulator.add(batch.hidden, batch.target);
      index++;
      progress.update(
        `fitting the linear adapter: batch ${index}/${source.batchesPerPass}`,
        Math.min(1, index / source.batchesPerPass),
      );
    }
    const adapter = accumulator.solve(options.ridge);
    progress.succeed(`fitted the linear adapter on ${accumulator.rows.toLocaleString('en')} tokens`);
    return adapter;
  } catch (error) {
    progress.fail();
    throw error;
  }
}
