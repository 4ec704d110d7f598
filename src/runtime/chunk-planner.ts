/**
 * Chooses the size of the next prompt chunk with HAT's rule (docs/chunking.md): the upload time of a chunk
 * should match the cloud's wait plus its compute time for that chunk over the pipeline depth P,
 *
 *   X · A / β  =  W + g(X) / P,   g(X) = g0 + g1 · X   ⇒   X = (W + g0 / P) / (A / β − g1 / P)
 *
 * with A bytes per token on the wire, β the uplink (bytes/ms), W the cloud's queueing wait, g the cloud's
 * latency model as it reports it. When uploading a token is faster than computing it (A/β ≤ g1/P) the link is
 * never the bottleneck and the chunk is as large as allowed. β and W are exponentially smoothed (0.8 history).
 */
import { Ema } from './ema.ts';

export interface ChunkPlannerOptions {
  bytesPerToken: number;
  pipelineDepth?: number;
  minChunk?: number;
  maxChunk: number;
  /** Size of the first chunk, before anything has been measured. */
  probeChunk?: number;
}

export interface ChunkMeasurement {
  tokens: number;
  bytesUp: number;
  /** Send-to-result time of the chunk. */
  roundTripMs: number;
  queueMs: number;
  computeMs: number;
  latency: { baseMs: number; perTokenMs: number };
}

export class ChunkPlanner {
  private readonly options: Required<ChunkPlannerOptions>;
  private readonly uplinkBytesPerMs = new Ema();
  private readonly waitMs = new Ema();
  private latency = { baseMs: 0, perTokenMs: 0 };

  constructor(options: ChunkPlannerOptions) {
    this.options = { pipelineDepth: 1, minChunk: 16, probeChunk: 64, ...options };
  }

  /** Seeds the estimates, e.g. from a previous request or the welcome frame. */
  seed(latency: { baseMs: number; perTokenMs: number }): void {
    if (latency.perTokenMs > 0) this.latency = latency;
  }

  observe(m: ChunkMeasurement): void {
    // What is left of the round trip after the cloud's own time is (mostly) the upload of this chunk.
    const transferMs = Math.max(0.05, m.roundTripMs - m.queueMs - m.computeMs);
    this.uplinkBytesPerMs.update(m.bytesUp / transferMs);
    this.waitMs.update(m.queueMs);
    if (m.latency.perTokenMs > 0 || m.latency.baseMs > 0) this.latency = m.latency;
  }

  /** The HAT rule's X before bounds; Infinity when the link is never the bottleneck. */
  idealChunk(): number {
    const beta = this.uplinkBytesPerMs.value;
    if (beta === undefined) return this.options.probeChunk;
    const P = this.options.pipelineDepth;
    const uploadPerToken = this.options.bytesPerToken / beta;
    const denominator = uploadPerToken - this.latency.perTokenMs / P;
    if (denominator <= 0) return Infinity;
    return (this.waitMs.valueOr(0) + this.latency.baseMs / P) / denominator;
  }

  next(remaining: number): number {
    const { minChunk, maxChunk } = this.options;
    const ideal = this.idealChunk();
    const size = Math.round(Math.min(maxChunk, Math.max(minChunk, ideal)));
    // Never leave a runt: a last chunk under minChunk is merged into this one.
    return remaining - size < minChunk ? remaining : Math.min(size, remaining);
  }

  describe(): { uplinkMBps?: number; waitMs?: number; latency: { baseMs: number; perTokenMs: number } } {
    const beta = this.uplinkBytesPerMs.value;
    return { uplinkMBps: beta === undefined ? undefined : beta / 1000, waitMs: this.waitMs.value, latency: this.latency };
  }
}
