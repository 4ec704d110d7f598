/**
 * When to stop drafting. A fixed policy stops at the first draft whose top-1 probability is below η (HAT's
 * rule, η = 0.6) or at the draft limit. The auto policy decides each draft from measurements instead:
 *
 *   after k drafts the round is expected to commit E_k = 1 + Σ_{j≤k} S_j tokens in T_k = T_v + k·t_d ms,
 *   where S_j = Π_{i≤j} a(c_i) is the chance that drafts 1..j all survive, a(c) the measured acceptance of a
 *   draft with confidence c, t_d one draft step and T_v one verification round trip. Adding draft k+1 raises
 *   the rate E/T iff  S_{k+1} · T_k > E_k · t_d.
 *
 * So under load (T_v grows) or on easy text (a(c) high) it drafts longer; on hard text it stops earlier. All
 * estimates are exponentially smoothed (weight 0.8 on history). Both policies measure a(c) (AcceptanceModel), so
 * the survival they report is calibrated whatever their stopping rule; parallel drafting relies on it.
 */
import { Ema } from '../ema.ts';

export interface RoundObservation {
  /** Confidence (top-1 probability) of each uploaded draft. */
  confidences: readonly number[];
  accepted: number;
  /** Mean time of one draft step in this round, ms (omit when no draft was made). */
  draftStepMs?: number;
  /** Send-to-result time of the verification, ms. */
  verifyMs: number;
  /**
   * The first draft made but not uploaded, when every uploaded one was accepted: its confidence and its acceptance
   * as the last verified row tells it (verify-round.ts VerifiedRound.declined).
   */
  declined?: { confidence: number; acceptance: number };
}

export interface DraftPolicy {
  /** Whether to keep the draft just made (confidence c, it would be draft number `index`, 1-based). */
  keep(confidence: number, index: number, survival: number, expectedTokens: number): boolean;
  /** Probability that a draft of this confidence is accepted. */
  acceptance(confidence: number): number;
  observe(round: RoundObservation): void;
  readonly maxDraft: number;
  describe(): { mode: 'fixed' | 'auto'; threshold: number; maxDraft: number };
}

const DECILES = 10;
// A confidence that is not a number (NaN from a broken row) counts in the lowest decile: indexing with NaN would
// crash the generation in observe().
const decileOf = (confidence: number) => (confidence > 0 ? Math.min(DECILES - 1, Math.floor(confidence * DECILES)) : 0);

/**
 * a(c): the measured chance that a draft of confidence c is kept, given that the drafts before it were — per
 * confidence decile, exponentially smoothed, with the prior a(c) = c until a decile has been observed. Only drafts
 * the verification judged count: those after the first rejected one say nothing about their own acceptance.
 */
export class AcceptanceModel {
  private readonly byDecile = Array.from({ length: DECILES }, () => new Ema());

  acceptance(confidence: number): number {
    return this.byDecile[decileOf(confidence)].valueOr(confidence);
  }

  observe(round: Pick<RoundObservation, 'confidences' | 'accepted' | 'declined'>): void {
    const { confidences, accepted, declined } = round;
    for (let i = 0; i < Math.min(confidences.length, accepted + 1); i++)
      this.byDecile[decileOf(confidences[i])].update(i < accepted ? 1 : 0);
    if (declined && accepted === confidences.length)
      this.byDecile[decileOf(declined.confidence)].update(declined.acceptance);
  }
}

export class FixedThresholdPolicy implements DraftPolicy {
  readonly threshold: number;
  readonly maxDraft: number;
  private readonly accepted = new AcceptanceModel();

  constructor(threshold: number, maxDraft: number) {
    this.threshold = threshold;
    this.maxDraft = maxDraft;
  }

  keep(confidence: number, index: number, _survival?: number, _expectedTokens?: number): boolean {
    return index <= this.maxDraft && confidence >= this.threshold;
  }

  acceptance(confidence: number): number {
    return this.accepted.acceptance(confidence);
  }

  observe(round: RoundObservation): void {
    this.accepted.observe(round);
  }

  describe() {
    return { mode: 'fixed' as const, threshold: this.threshold, maxDraft: this.maxDraft };
  }
}

export class AutoDraftPolicy implements DraftPolicy {
  readonly maxDraft: number;
  private readonly startThreshold: number;
  private readonly warmupRounds: number;
  private rounds = 0;
  private readonly accepted = new AcceptanceModel();
  private readonly draftStepMs = new Ema();
  private readonly verifyMs = new Ema();
  /** The confidence at which the last decisions switched from keep to stop: the effective η, for reports. */
  private readonly effectiveThreshold: Ema;

  constructor(startThreshold: number, maxDraft: number, warmupRounds = 3) {
    this.startThreshold = startThreshold;
    this.maxDraft = maxDraft;
    this.warmupRounds = warmupRounds;
    this.effectiveThreshold = new Ema(0.8, startThreshold);
  }

  acceptance(confidence: number): number {
    return this.accepted.acceptance(confidence);
  }

  private get measured(): boolean {
    return (
      this.rounds >= this.warmupRounds && this.draftStepMs.value !== undefined && this.verifyMs.value !== undefined
    );
  }

  keep(confidence: number, index: number, survival: number, expectedTokens: number): boolean {
    if (index > this.maxDraft) return false;
    if (!this.measured) return confidence >= this.startThreshold;
    const td = this.draftStepMs.value!;
    const roundMs = this.verifyMs.value! + (index - 1) * td;
    const nextSurvival = survival * this.acceptance(confidence);
    const keep = nextSurvival * roundMs > expectedTokens * td;
    // Record where the rule draws the line, as an η: the acceptance it needed, mapped back to a confidence.
    const needed = (expectedTokens * td) / (survival * roundMs);
    this.effectiveThreshold.update(Math.min(1, Math.max(0, needed)));
    return keep;
  }

  observe(round: RoundObservation): void {
    this.rounds++;
    this.accepted.observe(round);
    if (round.draftStepMs !== undefined) this.draftStepMs.update(round.draftStepMs);
    this.verifyMs.update(round.verifyMs);
  }

  describe() {
    return {
      mode: 'auto' as const,
      threshold: Number(this.effectiveThreshold.valueOr(this.startThreshold).toFixed(3)),
      maxDraft: this.maxDraft,
    };
  }
}
