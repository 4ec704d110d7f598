/**
 * How many rows the cloud advises each device's next verification to carry (result header `advisedRows`,
 * docs/protocol.md). Pure: the worker pool measures the demand, this module only decides.
 *
 * Why. A device drafts to shorten its own rounds: alone on the cloud, a round of k drafts costs about what one row
 * costs, so every draft likely to be accepted pays. On a saturated cloud every row is compute that other sessions
 * wait for, and a rejected draft is a row spent on nothing: the fleet benchmark's Qwen-shaped runs spent 1.75 rows
 * per committed token, which bounded batched hat below 2.5× (hat-method.md §15; vLLM turns speculation off past a
 * batch size for the same reason, `speculative_disable_by_batch_size`). The device cannot see that cost and its
 * own rule drafts *longer* as queueing slows its rounds, so the cloud says how many rows it can take.
 *
 * The rule. Up to the batch budget (--max-batch-tokens, the measured knee of the middle part, batch-knee.ts) more
 * rows in a run cost little; past it, cost grows with every row. So the cloud shares the budget among the sessions
 * that verify together: advisedRows = ⌊budget / min(demand, maxBatch)⌋, at least 1, where demand is the smoothed
 * number of sessions with a verification running or queued on the worker. With few sessions the advice exceeds any
 * round (--max-draft 6 → 7 rows) and changes nothing; with 30 on a 32-row budget it is 1 (one row per token, as
 * U-shape). The device's own rule still decides within it, and drafts only as far as its drafts are worth.
 *
 * No advice (0) where runs hold one request: with --max-batch 1 a run's fixed cost dominates and drafting pays
 * (that is the configuration batching is measured against), and a 'single-row' split runs multi-row requests alone.
 */
import type { BatchLimits } from './scheduler.ts';

/** The advice for sessions that verify `demand` at a time (smoothed; fractional), or 0 for none. */
export function adviseRows(limits: BatchLimits, demand: number): number {
  if (limits.maxBatch <= 1 || limits.batchableRows <= 1) return 0;
  const sharing = Math.min(Math.max(1, demand), limits.maxBatch);
  return Math.max(1, Math.floor(limits.maxBatchTokens / sharing));
}
