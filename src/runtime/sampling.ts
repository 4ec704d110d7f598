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
  if (count <= 0) return top;
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

/**
 * Zeroes everything outside the top-p nucleus and renormalises: the largest probabilities, taken in descending order
 * (ties lowest index first) until their running sum reaches topP.
 */
export function nucleus(probabilities: Float64Array, topP: number): Float64Array {
  if (topP >= 1) return probabilities;
  const { cutoff, tiesKept, kept } = nucleusCut(probabilities, topP);
  const out = new Float64Array(probabilities.length);
  let ties = tiesKept;
  for (let i = 0; i < out.length; i++) {
    const p = probabilities[i];
    if (p > cutoff || (p === cutoff && ties-- > 0)) out[i] = p / kept;
  }
  return out;
}

interface Cut {
  /** The smallest probability kept, how many entries of exactly that value are kept, and the kept mass. */
  cutoff: number;
  tiesKept: number;
  kept: number;
}

/** Which 32-bit half of a float64 holds its sign and exponent: the second on little-endian machines. */
const HIGH_WORD = new Uint32Array(Float64Array.of(1).buffer)[1] === 0x3ff00000 ? 1 : 0;

/**
 * Where the nucleus ends. Summing the sorted values in the same order as a full sort gives the same float mass, so
 * the result (and every seeded draw) is bit-identical to sorting the whole vocabulary. But only the head of that
 * order is sorted (native numeric sort, no comparator): one pass sums the mass per binary exponent, the entries
 * whose exponent reaches the bucket where that mass passes topP are gathered — exactly the head of the full order,
 * so if their walk reaches topP it stops where the full walk would — and when rounding says otherwise, all of them.
 */
function nucleusCut(probabilities: Float64Array, topP: number): Cut {
  const n = probabilities.length;
  const words = new Uint32Array(probabilities.buffer, probabilities.byteOffset, 2 * n);
  const massAt = new Float64Array(2048);
  const countAt = new Uint32Array(2048);
  for (let i = 0; i < n; i++) {
    const exponent = (words[2 * i + HIGH_WORD] >>> 20) & 0x7ff;
    massAt[exponent] += probabilities[i];
    countAt[exponent]++;
  }
  let lowest = 2047;
  let mass = massAt[lowest];
  let count = countAt[lowest];
  // At least one entry, as the walk always keeps the first (topP ≤ 0 keeps just the top one).
  while (lowest > 0 && (count === 0 || !(mass >= topP))) {
    lowest--;
    mass += massAt[lowest];
    count += countAt[lowest];
  }
  if (lowest > 0 && count < n) {
    const head = new Float64Array(count);
    for (let i = 0, j = 0; i < n; i++)
      if (((words[2 * i + HIGH_WORD] >>> 20) & 0x7ff) >= lowest) head[j++] = probabilities[i];
    const cut = walkDescending(head, topP);
    if (cut.kept >= topP) return cut;
  }
  return walkDescending(Float64Array.from(probabilities), topP);
}

/** Sorts `values` (a scratch copy) and sums them largest first until topP; all of them when it is never reached. */
function walkDescending(values: Float64Array, topP: number): Cut {
  values.sort();
  let kept = 0;
  let cutoff = 0;
  let tiesKept = 0;
  for (let i = values.length - 1; i >= 0; i--) {
    const p = values[i];
    kept += p;
    if (p === cutoff) tiesKept++;
    else {
      cutoff = p;
      tiesKept = 1;
    }
    if (kept >= topP) break;
  }
  return { cutoff, tiesKept, kept };
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
