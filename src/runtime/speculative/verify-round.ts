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
  /** The first draft the device made and did not upload, if it made one. */
  nextGuess?: Choice;
}

export interface VerifiedRound extends RoundOutcome {
  /** The accepted drafts, then the target's own next token. */
  committed: number[];
  /**
   * When every uploaded draft was accepted, the last verified row is the target at the draft the device made and did
   * not upload (`nextGuess`), so it judges that draft too: its confidence, and the chance it would have been accepted
   * (1 or 0 greedy, min(1, p/q) sampling). Without it a confidence the policy stops at is never verified again, so a
   * low early estimate there would stand for the whole session.
   */
  declined?: { confidence: number; acceptance: number };
}

export function verifyRound(
  chain: DraftsToVerify,
  targetRows: readonly Float32Array[],
  sampler: Sampler,
): VerifiedRound {
  const last = chain.drafts.length;
  let outcome: RoundOutcome;
  let acceptanceAtLast: (guess: Choice) => number;
  if (sampler.greedy) {
    const targetTop = targetRows.map((row) => argmax(row));
    outcome = acceptGreedy(chain.drafts, targetTop);
    acceptanceAtLast = (guess) => (targetTop[last] === guess.token ? 1 : 0);
  } else {
    // The distributions are computed once here, for the acceptance rule and the declined draft alike.
    const targetProbs = targetRows.map((row) => sampler.distribution(row));
    outcome = acceptSampled(chain.drafts, chain.draftProbs, targetProbs, sampler.random);
    acceptanceAtLast = (guess) => {
      const q = guess.probs?.[guess.token] ?? 0;
      return q > 0 ? Math.min(1, targetProbs[last][guess.token] / q) : 0;
    };
  }
  const guess = outcome.accepted === last ? chain.nextGuess : undefined;
  return {
    ...outcome,
    committed: [...chain.drafts.slice(0, outcome.accepted), outcome.next],
    declined: guess && { confidence: guess.confidence, acceptance: acceptanceAtLast(guess) },
  };
}
