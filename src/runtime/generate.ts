/**
 * Full-model generation: prefill the prompt on an empty cache, then one token per step until EOS or the token
 * budget. It runs over the abstract CausalLm (step ids → logits), so the split runtime can drive the same loop.
 */
import { HatError } from '../errors.ts';
import type { CausalLm } from './full-model.ts';
import type { Sampler } from './sampling.ts';
import { TokenCommitter, type StopReason } from './token-commit.ts';

export interface TokenLoopOptions {
  maxNewTokens: number;
  sampler: Sampler;
  /** Generation stops after emitting one of these (it is included in the result). */
  stopTokenIds?: readonly number[];
  onToken?: (id: number) => void;
}

export interface TokenLoopResult {
  /** Generated ids, prompt excluded. */
  ids: number[];
  stopReason: StopReason;
  /** Time to first token: prompt prefill + first sample. */
  ttftMs: number;
  /** Mean time between tokens after the first; null when fewer than two were generated. */
  tbtMs: number | null;
}

export async function generateTokens(
  model: CausalLm,
  promptIds: readonly number[],
  options: TokenLoopOptions,
): Promise<TokenLoopResult> {
  if (promptIds.length === 0) throw new HatError('INTERNAL', 'generation needs at least one prompt token');
  // The prompt is the whole context: a cache left by an earlier generation on this model would sit in front of it.
  model.truncate(0);
  const committer = new TokenCommitter({
    maxNewTokens: options.maxNewTokens,
    stopTokenIds: options.stopTokenIds,
    onTokens: options.onToken && ((ids) => ids.forEach(options.onToken!)),
  });
  const started = performance.now();
  let firstAt = started;
  let lastAt = started;
  let next = promptIds;
  while (!committer.done) {
    const output = await model.step(next, { lastOnly: true });
    const id = options.sampler(output.data.subarray((output.rows - 1) * output.cols, output.rows * output.cols));
    lastAt = performance.now();
    if (committer.ids.length === 0) firstAt = lastAt;
    committer.commit([id]);
    next = [id];
  }
  const { ids } = committer;
  return {
    ids,
    stopReason: committer.stopReason,
    ttftMs: firstAt - started,
    tbtMs: ids.length > 1 ? (lastAt - firstAt) / (ids.length - 1) : null,
  };
}
