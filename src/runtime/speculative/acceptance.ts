/**
 * Deciding what a verification round commits. Given the drafts d_1..d_k and the target model's distributions
 * p_0..p_k at the k+1 verified positions (p_i predicts the token after d_i, p_0 after the pending token):
 * - greedy: accept the longest prefix with d_{i+1} = argmax p_i, then commit argmax p_m (correction or bonus);
 * - sampling (Leviathan et al. / Chen et al.): accept d_{i+1} with probability min(1, p_i(d)/q_i(d)); on the
 *   first rejection resample from norm(max(0, p_i − q_i)); if all pass, sample the bonus from p_k. The committed
 *   tokens are then distributed exactly as the target model's own samples.
 */
import { drawFrom, type Uniform } from '../sampling.ts';

export interface RoundOutcome {
  /** Drafts accepted (a prefix of the drafts). */
  accepted: number;
  /** The token committed after the accepted drafts: a correction, or the bonus when all were accepted. */
  next: number;
}

export function acceptGreedy(drafts: readonly number[], targetTop: readonly number[]): RoundOutcome {
  let accepted = 0;
  while (accepted < drafts.length && drafts[accepted] === targetTop[accepted]) accepted++;
  return { accepted, next: targetTop[accepted] };
}

/**
 * @param draftProbs q_i, the distribution each draft was sampled from (after temperature / top-p).
 * @param targetProbs p_0..p_k, processed with the same temperature / top-p.
 */
export function acceptSampled(
  drafts: readonly number[],
  draftProbs: readonly Float64Array[],
  targetProbs: readonly Float64Array[],
  random: Uniform,
): RoundOutcome {
  for (let i = 0; i < drafts.length; i++) {
    const token = drafts[i];
    const p = targetProbs[i][token];
    const q = draftProbs[i][token];
    if (q > 0 && random() < Math.min(1, p / q)) continue;
    const residual = new Float64Array(targetProbs[i].length);
    let mass = 0;
    for (let v = 0; v < residual.length; v++) {
      residual[v] = Math.max(0, targetProbs[i][v] - draftProbs[i][v]);
      mass += residual[v];
    }
    // p = q exactly leaves no residual mass; then a rejection has probability zero and p itself is the right law.
    if (mass === 0) return { accepted: i, next: drawFrom(targetProbs[i], random) };
    for (let v = 0; v < residual.length; v++) residual[v] /= mass;
    return { accepted: i, next: drawFrom(residual, random) };
  }
  return { accepted: drafts.length, next: drawFrom(targetProbs[drafts.length], random) };
}
