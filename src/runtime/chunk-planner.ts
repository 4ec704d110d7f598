/**
 * Chooses the size of the next prompt chunk (docs/chunking.md). A prompt of N tokens in chunks of X flows
 * through three stages — device input part d(X) = d₁X, uplink u(X) = X·A/β, cloud c(X) = W + g₀ + g₁X — so
 *
 *   TTFT(X) ≈ d(X) + u(X) + (⌈N/X⌉ − 1) · max(d, u, c)(X) + c(X)
 *
 * and the planner takes the X that minimises it. When the uplink is the bottleneck the minimum sits where a
 * chunk's upload time equals the cloud's wait plus its compute, X·A/β = W + g(X)/P — HAT's rule (P = 1 here);
 * when compute is the bottleneck it trades per-chunk overhead g₀ against the unoverlapped first and last chunk.
 *
 * Estimates (exponentially smoothed, 0.8 on history): d₁ from the device's own runs; g₀, g₁ as the cloud
 * reports them; β from when each chunk must have reached the cloud (its result's arrival minus the cloud's
 * compute and queue time), counting only the time the link was busy with that chunk; W from chunks that did
 * not queue behind the device's own previous chunk. Until the device and the link are measured, chunks are
 * 64-token probes, and the device keeps at most a few chunks in flight so later chunks are sized with the link
 * and cloud measurements of earlier ones. A device keeps one planner across its sessions, one session at a time
 * (prefill.ts), so only its first prompt pays for the probes. Every chunk updates the estimates, so a link that
 * changed between requests shows within a few chunks; only a session's first chunk is sized on the last one's.
 */
import { Ema } from './ema.ts';

const PROBE_CHUNK = 64;

export interface ChunkPlannerOptions {
  bytesPerToken: number;
  minChunk?: number;
  /** The largest chunk when `next` is given no frame limit of its own. */
  maxChunk?: number;
}

export interface ChunkResult {
  bytesUp: number;
  /** performance.now() when the chunk was handed to the link, and when its result arrived. */
  sentAt: number;
  resultAt: number;
  queueMs: number;
  computeMs: number;
  latency: { baseMs: number; perTokenMs: number };
}

export class ChunkPlanner {
  private readonly options: Required<ChunkPlannerOptions>;
  private readonly uplinkBytesPerMs = new Ema();
  private readonly deviceMsPerToken = new Ema();
  private readonly waitMs = new Ema();
  private latency = { baseMs: 0, perTokenMs: 0 };
  private lastArrival = -Infinity;
  private lastResultAt = -Infinity;

  constructor(options: ChunkPlannerOptions) {
    this.options = { minChunk: 32, maxChunk: 4096, ...options };
  }

  /** Wire bytes per row the planner's link estimate is for. */
  get bytesPerToken(): number {
    return this.options.bytesPerToken;
  }

  /** Seeds the cloud's latency model, e.g. from the welcome frame. */
  seed(latency: { baseMs: number; perTokenMs: number }): void {
    if (latency.perTokenMs > 0 || latency.baseMs > 0) this.latency = latency;
  }

  observeDevice(tokens: number, ms: number): void {
    if (tokens > 0) this.deviceMsPerToken.update(ms / tokens);
  }

  observeResult(r: ChunkResult): void {
    const arrival = r.resultAt - r.computeMs - r.queueMs;
    const linkBusyFrom = Math.max(r.sentAt, this.lastArrival);
    const transferMs = arrival - linkBusyFrom;
    if (transferMs > 0.05) this.uplinkBytesPerMs.update(r.bytesUp / transferMs);
    // Queueing behind our own previous chunk is the pipeline working, not load on the cloud.
    if (arrival >= this.lastResultAt) this.waitMs.update(r.queueMs);
    this.lastArrival = Math.max(this.lastArrival, arrival);
    this.lastResultAt = Math.max(this.lastResultAt, r.resultAt);
    this.seed(r.latency);
  }

  /** Whether the device's own speed and the uplink have been measured. */
  get measured(): boolean {
    return this.deviceMsPerToken.value !== undefined && this.uplinkBytesPerMs.value !== undefined;
  }

  /** Predicted time to push `tokens` through the pipeline in chunks of `size`. */
  predictMs(tokens: number, size: number): number {
    const d = this.deviceMsPerToken.valueOr(0) * size;
    const beta = this.uplinkBytesPerMs.value;
    const u = beta ? (size * this.options.bytesPerToken) / beta : 0;
    const c = this.waitMs.valueOr(0) + this.latency.baseMs + this.latency.perTokenMs * size;
    return d + u + (Math.ceil(tokens / size) - 1) * Math.max(d, u, c) + c;
  }

  /** The next chunk's size for a prompt with `remaining` tokens left, at most `maxChunk` (the cloud's frame limit). */
  next(remaining: number, maxChunk = this.options.maxChunk): number {
    const { minChunk } = this.options;
    if (remaining <= minChunk) return Math.min(remaining, maxChunk);
    // Until the device has timed its input part and the link has been measured, send probe-sized chunks: a
    // large chunk sized on a guess is what costs most (the pipeline then waits for results before going on).
    if (!this.measured && remaining > PROBE_CHUNK + minChunk) return Math.min(PROBE_CHUNK, maxChunk);
    let best = Math.min(remaining, maxChunk);
    let bestMs = this.predictMs(remaining, best);
    // Candidate sizes on a geometric grid (ratio ~1.19): fine enough, and a handful of evaluations.
    for (let size = minChunk; size < Math.min(remaining, maxChunk); size = Math.ceil(size * 1.19)) {
      const ms = this.predictMs(remaining, size);
      if (ms < bestMs) {
        best = size;
        bestMs = ms;
      }
    }
    // Never leave a runt: a last chunk under minChunk is merged into this one, within the frame limit.
    if (remaining - best >= minChunk) return best;
    return remaining <= maxChunk ? remaining : remaining - minChunk;
  }

  describe(): {
    uplinkMBps?: number;
    waitMs?: number;
    deviceMsPerToken?: number;
    latency: { baseMs: number; perTokenMs: number };
  } {
    const beta = this.uplinkBytesPerMs.value;
    return {
      uplinkMBps: beta === undefined ? undefined : beta / 1000,
      waitMs: this.waitMs.value,
      deviceMsPerToken: this.deviceMsPerToken.value,
      latency: this.latency,
    };
  }
}
