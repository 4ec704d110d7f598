/**
 * How a logits row becomes a token on the device, shared by drafting and verification so both see the same
 * processed distribution (temperature, top-p from ../sampling.ts): greedy takes the argmax, with the plain
 * softmax's top-1 probability as the draft's confidence; sampling draws from the processed distribution.
 */
import {
  argmax,
  drawFrom,
  greedyChoice,
  samplingDistribution,
  seededUniform,
  type SamplingOptions,
  type Uniform,
} from '../sampling.ts';

export interface Sampler {
  readonly greedy: boolean;
  /** The distribution tokens are drawn from (temperature / top-p applied). */
  distribution(logits: ArrayLike<number>): Float64Array;
  readonly random: Uniform;
}

export interface Choice {
  token: number;
  /** Top-1 probability of the model's distribution: the draft's confidence. */
  confidence: number;
  /** The distribution the token was drawn from (sampling only). */
  probs?: Float64Array;
}

export function createSampler(options: SamplingOptions & { seed: number }): Sampler {
  return {
    greedy: options.temperature === 0,
    distribution: (logits) => samplingDistribution(logits, options),
    random: seededUniform(options.seed),
  };
}

export function choose(sampler: Sampler, logits: ArrayLike<number>): Choice {
  if (sampler.greedy) {
    const { token, probability } = greedyChoice(logits);
    return { token, confidence: probability };
  }
  const probs = sampler.distribution(logits);
  const token = drawFrom(probs, sampler.random);
  return { token, confidence: probs[argmax(probs)], probs };
}
