/**
 * Choosing the next token, as small pieces the full-model loop and the speculative runtime share:
 * greedy argmax, the sampling distribution (temperature, then top-p), and drawing from it with a seeded RNG —
 * so a run with a given seed repeats exactly, and speculative acceptance can compare the same distributions.
 */
import { HatError } from '../errors.ts';
import { seededRandom } from '../random.ts';

/** Uniform in [0, 1). */
export type Uniform = () => number;

export function seededUniform(seed: number): Uniform {
  const random = seededRandom(seed);
  return () => random.uniform();
}

/**
 * Throws for a row no token can be chosen from: a NaN or +Infinity logit, or no finite one. Left through, a NaN
 * makes every comparison false (argmax answers 0) and +Infinity makes softmax all NaN (the draw answers the last id).
 * −Infinity alone is a masked token, probability 0, and stays allowed.
 */
function rejectLogits(logits: ArrayLike<number>): never {
  let at = 0;
  while (at < logits.length && !Number.isNaN(logits[at]) && logits[at] !== Infinity) at++;
  const what =
    logits.length === 0
      ? 'the logits row is empty'
      : at < logits.length
        ? `logit ${at} of ${logits.length} is ${logits[at]}`
        : `all ${logits.length} logits are -Infinity`;
  throw new HatError(
    'RUNTIME',
    `cannot choose the next token: ${what}`,
    'the model computed non-finite values: check its weights (an fp16 model can overflow where fp32 does not)',
  );
}

/** The first largest logit's index; throws HatError('RUNTIME') on a non-finite row (see rejectLogits). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let top = logits[0];
  for (let i = 1; i < logits.length; i++) {
    const x = logits[i];
    if (x > top) {
      best = i;
      top = x;
    } else if (x !== x) rejectLogits(logits); // NaN: no comparison sees it
  }
  // A NaN first, a +Infinity, nothing finite, or an empty row.
  if (!(top > -Infinity && top < Infinity)) rejectLogits(logits);
  return best;
}

/** The most likely token and its softmax probability, in two passes and without allocating (every draft step). */
export function greedyChoice(logits: ArrayLike<number>): { token: number; probability: number } {
  const token = argmax(logits);
  const max = logits[token];
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp(logits[i] - max);
  return { token, probability: 1 / total };
}

/** The `count` largest logits' indices, largest first (one pass; ties keep the lower index). */
export function topIndices(logits: ArrayLike<number>, count: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (top.length === count && logits[i] <= logits[top[count - 1]]) continue;
    let at = Math.min(top.length, count - 1);
    if (top.length < count) top.push(i);
    while (at > 0 && logits[i] > logits[top[at - 1]]) {
      top[at] = top[at - 1];
      at--;
    }
    top[at] = i;
  }
  return top;
}

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP (1 keeps all). */
  topP: number;
}

/** softmax(logits / temperature), in float64 so tiny probabilities still sum correctly. */
export function softmax(logits: ArrayLike<number>, temperature = 1): Float64Array {
  const out = new Float64Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  // Math.max carries a NaN through, so this one check covers the row (see rejectLogits).
  if (!(max > -Infinity && max < Infinity)) rejectLogits(logits);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += out[i] = Math.exp((logits[i] - max) / temperature);
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

/** Zeroes everything outside the top-p nucleus and renormalises. */
export function nucleus(probabilities: Float64Array, topP: number): Float64Array {
  if (topP >= 1) return probabilities;
  const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
  const out = new Float64Array(probabilities.length);
  let kept = 0;
  for (const id of order) {
    out[id] = probabilities[id];
    kept += probabilities[id];
    if (kept >= topP) break;
  }
  for (let i = 0; i < out.length; i++) out[i] /= kept;
  return out;
}

/** The distribution a sampler draws from (one-hot on the argmax when greedy). */
export function samplingDistribution(logits: ArrayLike<number>, options: SamplingOptions): Float64Array {
  if (options.temperature === 0) {
    const oneHot = new Float64Array(logits.length);
    oneHot[argmax(logits)] = 1;
    return oneHot;
  }
  return nucleus(softmax(logits, options.temperature), options.topP);
}

/** Inverse-CDF draw; the last non-zero entry absorbs rounding so a draw never falls off the end. */
export function drawFrom(probabilities: Float64Array, uniform: Uniform): number {
  const target = uniform();
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probabilities.length; i++) {
    if (probabilities[i] === 0) continue;
    last = i;
    cumulative += probabilities[i];
    if (target < cumulative) return i;
  }
  return last;
}

export type Sampler = (logits: ArrayLike<number>) => number;

export function makeSampler(options: SamplingOptions & { seed?: number }): Sampler {
  if (options.temperature === 0) return argmax;
  const uniform = seededUniform(options.seed ?? 0);
  return (logits) => drawFrom(samplingDistribution(logits, options), uniform);
}
