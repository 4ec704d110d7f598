/**
 * What a verification round commits, as a pure function of the drafts and the target model's logits rows
 * (one per uploaded position: the pending token and each draft): the greedy prefix rule, or speculative sampling.
 */
import { argmax } from '../sampling.ts';
import { acceptGreedy, acceptSampled, type RoundOutcome } from './acceptance.ts';
import type { Choice, Sampler } from './sampler.ts';

export interface DraftsToVerify {
  drafts: readonly number[];
  /** The distributions the drafts were sampled from (sampling mode). */
  draftProbs: readonly Float64Array[];
}

export interface VerifiedRound extends RoundOutcome {
  /** The accepted drafts, then the target's own next token. */
  committed: number[];
}

export function verifyRound(
  chain: DraftsToVerify,
  targetRows: readonly Float32Array[],
  sampler: Sampler,
): VerifiedRound {
  const outcome = sampler.greedy
    ? acceptGreedy(
        chain.drafts,
        targetRows.map((row) => argmax(row)),
      )
    : acceptSampled(
        chain.drafts,
        chain.draftProbs,
        targetRows.map((row) => sampler.distribution(row)),
        sampler.random,
      );
  return { ...outcome, committed: [...chain.drafts.slice(0, outcome.accepted), outcome.next] };
}

/**
 * The chance the first draft the device made but did not upload would have been accepted, read from the last
 * verified row (the target at that draft's position) when every uploaded draft was accepted: 1 or 0 greedy,
 * min(1, p/q) sampling. Without it a confidence the policy stops at is never verified again, so a low early
 * estimate there would stand for the whole session.
 */
export function declinedAcceptance(guess: Choice, lastTargetRow: Float32Array, sampler: Sampler): number {
  if (sampler.greedy) return argmax(lastTargetRow) === guess.token ? 1 : 0;
  const q = guess.probs?.[guess.token] ?? 0;
  return q > 0 ? Math.min(1, sampler.distribution(lastTargetRow)[guess.token] / q) : 0;
}
