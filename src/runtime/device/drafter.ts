/**
 * The device's small model: input part → adapter → output part. A chain of drafts is grown one token at a
 * time; each step also computes the input part's hidden state of the new token, which is exactly what the
 * verification uploads — drafting and preparing the upload are the same work.
 */
import type { DraftPolicy } from '../speculative/draft-policy.ts';
import { choose, type Choice, type Sampler } from '../speculative/sampler.ts';
import { lastRow } from '../part-runner.ts';
import { topIndices } from '../sampling.ts';
import type { DeviceParts } from './device-parts.ts';

export interface DraftChain {
  /** Input-part hidden states of the pending token and each kept draft, [1 + drafts, hidden] as rows. */
  hidden: Float32Array[];
  drafts: number[];
  confidences: number[];
  /** Distributions the drafts were sampled from (sampling mode). */
  draftProbs: Float64Array[];
  /** The small model's guess for the token after the last draft (the first one it declined to keep). */
  nextGuess?: Choice;
  /** Its guess followed by the next most likely tokens there: where parallel drafting branches. */
  nextCandidates?: number[];
  survival: number;
  expectedTokens: number;
  /** True when the policy said stop (as opposed to being interrupted). */
  finished: boolean;
  stepMs: number[];
}

/**
 * Keeps at most `maxDrafts` drafts of a chain (a branch drafted ahead can hold more than a round may still use).
 * What the small model guessed after the cut is unknown, so the chain offers no candidates to branch on.
 */
export function capDrafts(chain: DraftChain, maxDrafts: number): void {
  if (chain.drafts.length <= maxDrafts) return;
  chain.drafts.length = maxDrafts;
  chain.confidences.length = maxDrafts;
  chain.draftProbs.length = Math.min(chain.draftProbs.length, maxDrafts);
  chain.hidden.length = 1 + maxDrafts;
  chain.nextGuess = undefined;
  chain.nextCandidates = undefined;
  chain.finished = true;
}

/** Most candidate continuations a parallel-drafting device keeps. */
export const MAX_BRANCHES = 4;

/** `first`, then the other most likely tokens by logit, `count` in all. */
function likeliest(logits: Float32Array, count: number, first: number): number[] {
  return [first, ...topIndices(logits, count + 1).filter((t) => t !== first)].slice(0, Math.min(count, logits.length));
}

export class Drafter {
  private readonly parts: DeviceParts;
  private readonly sampler: Sampler;
  readonly policy: DraftPolicy;

  constructor(parts: DeviceParts, sampler: Sampler, policy: DraftPolicy) {
    this.parts = parts;
    this.sampler = sampler;
    this.policy = policy;
  }

  /** Starts a chain at the pending (committed, unprocessed) token: runs the input part on it. */
  async start(pending: number): Promise<DraftChain> {
    const started = performance.now();
    const h = await this.parts.input.step({ ids: [pending] }, 1);
    return {
      hidden: [h.data.slice()],
      drafts: [],
      confidences: [],
      draftProbs: [],
      survival: 1,
      expectedTokens: 1,
      finished: false,
      stepMs: [performance.now() - started],
    };
  }

  /**
   * Grows the chain by one draft if the policy keeps it and the chain holds fewer than `maxDrafts` (what the round
   * can still commit). Returns false when the chain is finished.
   * The adapter and input part caches advance with the chain; callers truncate them on rejection.
   */
  async extend(chain: DraftChain, maxDrafts = Infinity): Promise<boolean> {
    if (chain.finished || !this.parts.adapter) {
      chain.finished = true;
      return false;
    }
    const started = performance.now();
    const x = chain.hidden[chain.hidden.length - 1];
    const adapted = await this.parts.adapter.step({ hidden: x }, 1);
    // With decoder layers in the output part (J > 0) the drafts run them on their own copy of its cache, taken
    // from the verified one when the chain started (DeviceCaches.startDrafting) and grown draft by draft.
    const logits = await this.parts.draftOutput.step({ hidden: lastRow(adapted) }, 1);
    const choice = choose(this.sampler, lastRow(logits));
    const index = chain.drafts.length + 1;
    // Over `maxDrafts` the draft is declined like one the policy turns down, after the adapter step, so the
    // adapter's cache stays one position ahead of the chain as every round's rollback expects.
    if (index > maxDrafts || !this.policy.keep(choice.confidence, index, chain.survival, chain.expectedTokens)) {
      chain.nextGuess = choice;
      chain.nextCandidates = likeliest(lastRow(logits), MAX_BRANCHES, choice.token);
      chain.finished = true;
      chain.stepMs.push(performance.now() - started);
      return false;
    }
    const h = await this.parts.input.step({ ids: [choice.token] }, 1);
    chain.drafts.push(choice.token);
    chain.confidences.push(choice.confidence);
    if (choice.probs) chain.draftProbs.push(choice.probs);
    chain.hidden.push(h.data.slice());
    chain.survival *= this.policy.acceptance(choice.confidence);
    chain.expectedTokens += chain.survival;
    chain.stepMs.push(performance.now() - started);
    return true;
  }
}
