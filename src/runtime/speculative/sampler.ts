/**
 * How a logits row becomes a token, shared by drafting and verification so both see the same distribution:
 * greedy (argmax; confidence from the plain softmax) or sampling from the processed distribution.
 */
import { argmax, sampleIndex } from './acceptance.ts';

export interface Sampler {
  readonly greedy: boolean;
  /** The distribution tokens are drawn from (temperature / top-p applied). */
  distribution(logits: Float32Array): Float32Array;
  random(): number;
}

export interface Choice {
  token: number;
  /** Top-1 probability of the model's distribution: the draft's confidence. */
  confidence: number;
  /** The distribution the token was drawn from (sampling only). */
  probs?: Float32Array;
}

export function softmax(logits: ArrayLike<number>, temperature = 1): Float32Array {
  const out = new Float32Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp((logits[i] - max) / temperature);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export function choose(sampler: Sampler, logits: Float32Array): Choice {
  if (sampler.greedy) {
    const token = argmax(logits);
    return { token, confidence: softmax(logits)[token] };
  }
  const probs = sampler.distribution(logits);
  const token = sampleIndex(probs, () => sampler.random());
  return { token, confidence: probs[argmax(probs)], probs };
}
