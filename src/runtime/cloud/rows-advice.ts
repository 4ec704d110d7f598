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
 *
 * No advice either while the worker is not saturated (busy less than SATURATED_BUSY_SHARE of the last second or so):
 * rows are scarce only when someone waits for them, and a verification cut short costs its device a whole extra
 * round trip. Advised at any load, at 4 sessions/s on the default split (worker ~60 % busy) hat's rounds committed
 * 1.70 tokens against 2.22 unadvised, it sent 31 % more verifications, and its TBT was 0.56× u-shape's against 0.38×
 * (fleet bench, docs/bench-fleet-prompt-rows-ab.txt, run 2).
 */
import type { BatchLimits } from './scheduler.ts';

/** When the cloud advises rows (--rows-advice): near saturation, at any load, or never (the default, below). */
export const ROWS_ADVICE_WHEN = ['saturated', 'always', 'off'] as const;
export type RowsAdviceWhen = (typeof ROWS_ADVICE_WHEN)[number];

/**
 * Off by default: on the default split the advice cost batched hat TTFT and TBT at 5 sessions/s and gave the closed
 * loop nothing (A/Bs in docs/fleet-results.md, "Rows advice off by default"); 'saturated' stays for clouds whose
 * devices draft rows they would mostly reject.
 */
export const DEFAULT_ROWS_ADVICE: RowsAdviceWhen = 'off';

/**
 * The busy share (BusyShare over BUSY_TAU_MS of the worker's time from a batch's send to its reply) from which the
 * worker counts as saturated. In the fleet bench at f7c97c2 batched hat's serve-cloud, whose one worker does nearly
 * all its work, was 0.96–0.99 cores busy at 6/s, 10/s and in the closed loop, and 0.41–0.69 at 2–4/s.
 */
export const SATURATED_BUSY_SHARE = 0.85;

/** Time constant of the busy share: long enough to span many runs (2–50 ms each), short enough to follow load. */
export const BUSY_TAU_MS = 1000;

/**
 * The advice for sessions that verify `demand` at a time (smoothed; fractional) on a worker busy `busyShare` of its
 * recent time, or 0 for none.
 */
export function adviseRows(limits: BatchLimits, demand: number, busyShare: number, when: RowsAdviceWhen): number {
  if (when === 'off' || limits.maxBatch <= 1 || limits.batchableRows <= 1) return 0;
  if (when === 'saturated' && busyShare < SATURATED_BUSY_SHARE) return 0;
  const sharing = Math.min(Math.max(1, demand), limits.maxBatch);
  return Math.max(1, Math.floor(limits.maxBatchTokens / sharing));
}
