/**
 * AdamW (decoupled weight decay) with global-norm gradient clipping, and the learning-rate schedule: linear
 * warm-up, then cosine decay to a floor. Norm weights are not decayed (decay would pull them towards 0, not
 * towards their natural value 1).
 */
import { PARAM_NAMES, zerosLike, type AdapterParams, type ParamName } from './attention-adapter.ts';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  /** Rescale the whole gradient when its L2 norm exceeds this (0 = never). */
  clipNorm: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.01, clipNorm: 1 };

const NOT_DECAYED: ReadonlySet<ParamName> = new Set(['inputNorm']);

export interface Schedule {
  peak: number;
  warmupSteps: number;
  totalSteps: number;
  /** The rate at the end of the cosine, as a fraction of the peak. */
  floor: number;
}

/** The learning rate of 0-based step `step`. */
export function learningRate(step: number, schedule: Schedule): number {
  const { peak, warmupSteps, totalSteps, floor } = schedule;
  if (step < warmupSteps) return (peak * (step + 1)) / warmupSteps;
  const decaySteps = Math.max(1, totalSteps - warmupSteps);
  const progress = Math.min(1, (step - warmupSteps) / decaySteps);
  return peak * (floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

export function globalNorm(grads: AdapterParams): number {
  let sum = 0;
  for (const name of PARAM_NAMES) for (const g of grads[name]) sum += g * g;
  return Math.sqrt(sum);
}

export class AdamW {
  private readonly m: AdapterParams;
  private readonly v: AdapterParams;
  private steps = 0;

  constructor(
    private readonly params: AdapterParams,
    private readonly options: AdamWOptions,
  ) {
    this.m = zerosLike(params);
    this.v = zerosLike(params);
  }

  /** Updates the parameters in place; returns the gradient norm before clipping. */
  step(grads: AdapterParams, lr: number): number {
    const { beta1, beta2, epsilon, weightDecay, clipNorm } = this.options;
    const norm = globalNorm(grads);
    const clip = clipNorm > 0 && norm > clipNorm ? clipNorm / norm : 1;
    this.steps++;
    const correction1 = 1 - beta1 ** this.steps;
    const correction2 = 1 - beta2 ** this.steps;
    // Hoisted constants: step = lr/c1 · m / (√v · 1/√c2 + ε), the same update with one sqrt and one divide.
    const stepSize = lr / correction1;
    const rootCorrection2 = 1 / Math.sqrt(correction2);
    for (const name of PARAM_NAMES) {
      const p = this.params[name],
        g = grads[name],
        m = this.m[name],
        v = this.v[name];
      const decay = NOT_DECAYED.has(name) ? 1 : 1 - lr * weightDecay;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * clip;
        const mi = beta1 * m[i] + (1 - beta1) * gi;
        const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(vi) * rootCorrection2 + epsilon);
      }
    }
    return norm;
  }
}
