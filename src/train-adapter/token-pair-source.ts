/**
 * A PairSource over token text: the token stream is cut into windows of `seq` tokens (each window is a fresh
 * sequence at positions 0..seq−1, as the model sees it), `batch` windows at a time are run through the split
 * parts by `computeHidden` (h_K and h_N), and the targets are the full model's greedy tokens, argmax of the
 * frozen head on h_N. Only one batch of windows is held at a time; the tail that does not fill a batch is
 * dropped so every step sees the same shape.
 */
import { HatError } from '../errors.ts';
import type { MatMulEngine } from './matmul.ts';
import { topTokens, type OutputHead } from './output-head.ts';
import type { PairBatch, PairSource } from './pair-source.ts';

export interface TokenPairSourceOptions {
  /** The token texts, read afresh on every pass (e.g. a tokenised file streamed from disk). */
  texts: () => AsyncIterable<ArrayLike<number>> | Iterable<ArrayLike<number>>;
  /** Tokens in one pass (sizes the schedule); windows beyond it are not read. */
  totalTokens: number;
  batch: number;
  seq: number;
  hidden: number;
  /**
   * Runs [batch][seq] token ids through the input part (→ h_K) and the middle part (→ h_N),
   * each [batch·seq, hidden].
   */
  computeHidden(ids: number[][]): Promise<{ inputs: Float32Array; targets: Float32Array }>;
  head: OutputHead;
  engine: MatMulEngine;
}

export function tokenPairSource(options: TokenPairSourceOptions): PairSource {
  const { batch, seq, hidden } = options;
  const batchesPerPass = Math.floor(options.totalTokens / (batch * seq));
  if (!(batch > 0 && seq > 0) || batchesPerPass === 0) {
    throw new HatError(
      'BAD_OPTION',
      `${options.totalTokens} tokens do not fill one batch of ${batch} × ${seq}`,
      'give more text or lower the batch size or sequence length',
    );
  }
  async function* windows(): AsyncIterable<number[]> {
    let window: number[] = [];
    for await (const text of options.texts()) {
      for (let i = 0; i < text.length; i++) {
        window.push(text[i]);
        if (window.length === seq) {
          yield window;
          window = [];
        }
      }
    }
  }
  return {
    hidden,
    batchesPerPass,
    async *batches(): AsyncIterable<PairBatch> {
      let pending: number[][] = [];
      let produced = 0;
      for await (const window of windows()) {
        pending.push(window);
        if (pending.length < batch) continue;
        const { inputs, targets } = await options.computeHidden(pending);
        if (inputs.length !== batch * seq * hidden || targets.length !== inputs.length) {
          throw new HatError(
            'INTERNAL',
            `computeHidden returned ${inputs.length} and ${targets.length} values for ${batch}×${seq}×${hidden}`,
          );
        }
        const { tokens } = await topTokens(options.head, targets, options.engine);
        const positions = Int32Array.from({ length: batch * seq }, (_, i) => i % seq);
        yield { batch, seq, hidden: inputs, target: targets, targetTokens: tokens, positions };
        pending = [];
        if (++produced === batchesPerPass) return;
      }
    },
  };
}
