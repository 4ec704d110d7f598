/**
 * What the device's generation loop talks to for the middle part: a cloud session over WebSockets
 * (CloudClient), the same with reconnect-and-replay on a lost link (ResumingVerifier), or the adapter standing in
 * for the middle part on the device itself after the cloud is gone (LocalVerifier, `--fallback local`).
 */
import type { WireDTypeName } from '../protocol/frame.ts';

export interface LatencyModel {
  baseMs: number;
  perTokenMs: number;
}

export interface ForwardOptions {
  /** Return every position's middle output (verification), or only the last (a prefill chunk). */
  allPositions: boolean;
  prefill?: boolean;
  /** A prefill chunk: the rows the prompt has left from it on, its own included (sent where the cloud takes it). */
  promptRows?: number;
}

export interface ForwardResult {
  /** [rows, hiddenSize] float32. */
  hidden: Float32Array;
  rows: number;
  queueMs: number;
  computeMs: number;
  /** Latency model g(X) reported with this result. */
  latency: LatencyModel;
  /** The most rows the cloud advises the next verification to carry (src/runtime/cloud/rows-advice.ts); absent: any. */
  advisedRows?: number;
  /** From send to the result's arrival on the device, including emulated link time. */
  roundTripMs: number;
  bytesUp: number;
  bytesDown: number;
}

/**
 * Whether a result of a session's prompt chunk that arrived at `earlierAt` was answered by the run whose answer
 * reports `computeMs` and arrived at `laterAt`. The cloud runs a session's queued chunks as one run and answers each
 * with that whole run's compute, back to back; a session's runs are serial, so an answer from an earlier run arrives
 * before this run started. (The figure is a float32 of a measured time: two runs rarely report the same.)
 */
export function answeredBySameRun(
  earlier: { computeMs: number; at: number },
  later: { computeMs: number; at: number },
): boolean {
  return earlier.computeMs === later.computeMs && earlier.at >= later.at - later.computeMs;
}

export interface Verifier {
  readonly wire: WireDTypeName;
  /** Most rows one request may carry (0: no limit announced). */
  readonly maxTokensPerFrame: number;
  readonly initialLatency: LatencyModel;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /**
   * Runs n input-part hidden states after the middle's cache is cut to `pastLength`. Requests may be pipelined;
   * results resolve in order.
   */
  forward(hidden: Float32Array, nTokens: number, pastLength: number, options: ForwardOptions): Promise<ForwardResult>;
  close(): void;
  /** Set by verifiers that survive lost links. */
  readonly resumeStatus?: ResumeStatus;
}

export interface ResumeStatus {
  /** New sessions opened after lost connections. */
  reconnects: number;
  /** Set when the small model took over: at which position (the middle's length) and why. */
  fallback?: { position: number; reason: string };
}
