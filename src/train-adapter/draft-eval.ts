/**
 * How well a small model drafts, measured on held-out text without running rounds for real. For each position
 * we know the SLM's top-1 token and its probability and the full model's (greedy) token, all teacher-forced on
 * the same prefix; rounds are then replayed as HAT runs them:
 *
 *   from the last committed position, draft while the top-1 probability ≥ η, at most `maxDrafts`; the cloud
 *   accepts the longest prefix that equals the full model's tokens and adds one token of its own (the
 *   correction, or the bonus when all drafts were accepted): a round commits accepted + 1 tokens.
 *
 * The replay is exact when the text is the full model's own greedy output (self-generated evaluation text):
 * every accepted draft is then the text's next token, so the teacher-forced prefix is the one decoding would
 * see. On other text it is the usual teacher-forced estimate. The drafting cost after a rejected draft uses the
 * teacher-forced probabilities, an approximation of what the device would compute.
 */
import { HatError } from '../errors.ts';

export interface DraftTrace {
  /** The SLM's top-1 token at each position. */
  draftTokens: ArrayLike<number>;
  /** Its softmax probability. */
  draftProbabilities: ArrayLike<number>;
  /** The full model's greedy token at each position. */
  targetTokens: ArrayLike<number>;
}

export interface RoundStats {
  threshold: number;
  maxDrafts: number;
  positions: number;
  rounds: number;
  committed: number;
  /** Drafts sent for verification, and how many of them were accepted. */
  drafts: number;
  accepted: number;
  /** SLM steps run, including the one whose low confidence stopped drafting. */
  draftSteps: number;
  meanTokensPerRound: number;
  meanDraftsPerRound: number;
  /** Accepted / sent. */
  acceptanceRate: number;
}

export interface CostModel {
  /** One SLM draft step on the device (input part + adapter + output part), ms. */
  draftStepMs: number;
  /** One verification round: upload, cloud middle part, download and the device's commit, ms. */
  verifyMs: number;
}

function checkTrace(trace: DraftTrace): number {
  const n = trace.targetTokens.length;
  if (trace.draftTokens.length !== n || trace.draftProbabilities.length !== n) {
    throw new HatError(
      'INTERNAL',
      `draft trace lengths differ: ${trace.draftTokens.length} drafts, ` +
        `${trace.draftProbabilities.length} probabilities, ` +
        `${n} targets`,
    );
  }
  return n;
}

/** Fraction of positions where the SLM's top-1 equals the full model's token. */
export function top1Agreement(traces: readonly DraftTrace[]): number {
  let agreed = 0,
    total = 0;
  for (const trace of traces) {
    const n = checkTrace(trace);
    for (let i = 0; i < n; i++) if (trace.draftTokens[i] === trace.targetTokens[i]) agreed++;
    total += n;
  }
  return total ? agreed / total : 0;
}

export function simulateRounds(traces: readonly DraftTrace[], threshold: number, maxDrafts = 6): RoundStats {
  if (!(maxDrafts >= 0) || !(threshold >= 0 && threshold <= 1)) {
    throw new HatError(
      'BAD_OPTION',
      `draft threshold ${threshold} must lie in [0, 1] and the draft limit ${maxDrafts} be ≥ 0`,
    );
  }
  let positions = 0,
    rounds = 0,
    committed = 0,
    drafts = 0,
    accepted = 0,
    draftSteps = 0;
  for (const trace of traces) {
    const n = checkTrace(trace);
    positions += n;
    let position = 0;
    while (position < n) {
      let sent = 0,
        matched = 0,
        matching = true;
      while (sent < maxDrafts && position + sent < n) {
        const at = position + sent;
        draftSteps++;
        if (trace.draftProbabilities[at] < threshold) break;
        if (matching && trace.draftTokens[at] === trace.targetTokens[at]) matched++;
        else matching = false;
        sent++;
      }
      const tokens = Math.min(matched + 1, n - position);
      rounds++;
      committed += tokens;
      drafts += sent;
      accepted += matched;
      position += tokens;
    }
  }
  return {
    threshold,
    maxDrafts,
    positions,
    rounds,
    committed,
    drafts,
    accepted,
    draftSteps,
    meanTokensPerRound: rounds ? committed / rounds : 0,
    meanDraftsPerRound: rounds ? drafts / rounds : 0,
    acceptanceRate: drafts ? accepted / drafts : 0,
  };
}

/** Expected wall time per committed token: every round pays its draft steps and one verification. */
export function msPerToken(stats: RoundStats, cost: CostModel): number {
  return stats.committed
    ? (stats.draftSteps * cost.draftStepMs + stats.rounds * cost.verifyMs) / stats.committed
    : Infinity;
}

export interface ThresholdSweep {
  rows: Array<RoundStats & { msPerToken: number }>;
  /** The threshold with the lowest expected time per token (the lower one on a tie). */
  best: number;
}

export const DEFAULT_THRESHOLDS = [0, 0.2, 0.4, 0.6, 0.8];

export function sweepThresholds(
  traces: readonly DraftTrace[],
  cost: CostModel,
  thresholds: readonly number[] = DEFAULT_THRESHOLDS,
  maxDrafts = 6,
): ThresholdSweep {
  if (thresholds.length === 0) throw new HatError('BAD_OPTION', 'the threshold sweep needs at least one threshold');
  const rows = [...thresholds]
    .sort((a, b) => a - b)
    .map((threshold) => {
      const stats = simulateRounds(traces, threshold, maxDrafts);
      return { ...stats, msPerToken: msPerToken(stats, cost) };
    });
  const best = rows.reduce((a, b) => (b.msPerToken < a.msPerToken ? b : a));
  return { rows, best: best.threshold };
}
