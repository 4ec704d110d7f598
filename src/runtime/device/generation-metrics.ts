/**
 * What run-device reports about one generation, recorded from the loop's events: prefill chunks, verification
 * rounds, commits, resumes and fallback, and the device's own overhead per round.
 */
import type { DraftPolicy } from '../speculative/draft-policy.ts';
import { summarize, type Summary } from './metrics.ts';
import { answeredBySameRun, type ForwardResult, type Verifier } from './verifier.ts';

export interface PrefillChunkMetrics {
  tokens: number;
  deviceMs: number;
  bytesUp: number;
  queueMs: number;
  computeMs: number;
  roundTripMs: number;
}

export interface DeviceMetrics {
  ttftMs: number;
  /** Per committed token: its round's time / tokens the round committed. */
  tbtMs: Summary;
  rounds: number;
  tokensPerRound: number;
  bytesUp: number;
  bytesDown: number;
  chunkSizes: number[];
  /** Per prompt chunk: device input-part time, bytes sent, the cloud's queue/compute time and the round trip. */
  prefillChunks: PrefillChunkMetrics[];
  draft: { mode: string; threshold: number; maxDraft: number };
  parallelDrafting: { branches: number; hits: number };
  /** Rounds whose draft limit was the cloud's advice (advisedRows − 1) rather than the device's own. */
  advisedRounds: number;
  /** The cloud's compute for this generation's requests: each run once, also where it answered several chunks. */
  cloudComputeMs: number;
  cloudQueueMs: number;
  /** Mean per verification round of the device's own time outside model runs and outside waiting for the cloud. */
  deviceOverheadMsPerRound: number;
  /** New cloud sessions opened after a lost connection (each replays the committed states). */
  reconnects: number;
  fallback?: string;
}

export class MetricsRecorder {
  readonly metrics: DeviceMetrics;
  private readonly started = performance.now();
  private readonly bytesAtStart: { up: number; down: number };
  private readonly perToken: number[] = [];
  private lastCommitAt = 0;
  private overheadMs = 0;
  /** The last prompt chunk's answer: its run's compute and when it arrived (performance.now()). */
  private lastChunk?: { computeMs: number; at: number };

  constructor(
    private readonly verifier: Verifier,
    private readonly policy: DraftPolicy,
  ) {
    this.bytesAtStart = { up: verifier.bytesUp, down: verifier.bytesDown };
    this.metrics = {
      ttftMs: 0,
      tbtMs: summarize([]),
      rounds: 0,
      tokensPerRound: 0,
      bytesUp: 0,
      bytesDown: 0,
      chunkSizes: [],
      prefillChunks: [],
      draft: policy.describe(),
      parallelDrafting: { branches: 0, hits: 0 },
      advisedRounds: 0,
      cloudComputeMs: 0,
      cloudQueueMs: 0,
      deviceOverheadMsPerRound: 0,
      reconnects: 0,
    };
  }

  chunkPlanned(size: number): void {
    this.metrics.chunkSizes.push(size);
  }

  /** A prompt chunk's result arrived at `resultAt` (performance.now()). */
  chunkAnswered(tokens: number, deviceMs: number, result: ForwardResult, resultAt: number): void {
    const { bytesUp, queueMs, computeMs, roundTripMs } = result;
    this.metrics.prefillChunks.push({ tokens, deviceMs, bytesUp, queueMs, computeMs, roundTripMs });
    // A run that answered several queued chunks reports its whole compute to each: count it once.
    const answer = { computeMs, at: resultAt };
    const sameRun = this.lastChunk !== undefined && answeredBySameRun(this.lastChunk, answer);
    this.lastChunk = answer;
    this.cloudTime(result, sameRun);
  }

  firstToken(): void {
    this.metrics.ttftMs = performance.now() - this.started;
    this.lastCommitAt = performance.now();
  }

  /** A verification round ended with `committed` tokens; `ownMs` is the device's time outside runs and waiting. */
  round(
    result: ForwardResult,
    committed: number,
    ownMs: number,
    flags: { predrafted: boolean; branchUsed: boolean; advised: boolean },
  ): void {
    const { predrafted, branchUsed, advised } = flags;
    this.metrics.rounds++;
    if (advised) this.metrics.advisedRounds++;
    this.cloudTime(result, false);
    if (predrafted) this.metrics.parallelDrafting.branches++;
    if (branchUsed) this.metrics.parallelDrafting.hits++;
    const now = performance.now();
    for (let i = 0; i < committed; i++) this.perToken.push((now - this.lastCommitAt) / committed);
    this.lastCommitAt = now;
    this.overheadMs += ownMs;
  }

  private cloudTime(result: ForwardResult, runCounted: boolean): void {
    if (!runCounted) this.metrics.cloudComputeMs += result.computeMs;
    this.metrics.cloudQueueMs += result.queueMs;
  }

  finish(generated: number): DeviceMetrics {
    const m = this.metrics;
    m.tbtMs = summarize(this.perToken);
    m.tokensPerRound = m.rounds ? Number(((generated - 1) / m.rounds).toFixed(3)) : 0;
    m.bytesUp = this.verifier.bytesUp - this.bytesAtStart.up;
    m.bytesDown = this.verifier.bytesDown - this.bytesAtStart.down;
    m.draft = this.policy.describe();
    m.deviceOverheadMsPerRound = m.rounds ? Number((this.overheadMs / m.rounds).toFixed(4)) : 0;
    return m;
  }
}
