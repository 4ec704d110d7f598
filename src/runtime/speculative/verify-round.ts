/**
 * What a verification round commits, as a pure function of the drafts and the target model's logits rows
 * (one per uploaded position: the pending token and each draft): the greedy prefix rule, or speculative sampling.
 */
import { argmax } from '../sampling.ts';
import { acceptGreedy, acceptSampled, type RoundOutcome } from './acceptance.ts';
import type { Sampler } from './sampler.ts';

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
