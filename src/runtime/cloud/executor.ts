/**
 * What the cloud server needs from whatever runs the middle part: run a session's hidden states on top of its
 * KV cache (first truncating the cache to `pastLength`, which is how the device rolls the cloud back), and forget
 * a session. The worker pool (worker-pool.ts) is the real implementation.
 */
export interface MiddleRequest {
  sessionId: number;
  /** Cache length to keep before appending these tokens; positions continue from it. */
  pastLength: number;
  nTokens: number;
  /** [nTokens, hiddenSize] float32, the input part's output. */
  hidden: Float32Array;
  /** Return every position's middle output (verification) or only the last (a prefill chunk). */
  allPositions: boolean;
  /** A prefill chunk's rows its prompt has left from it on, as its device said (frame header promptRows). */
  promptRows?: number;
}

export interface MiddleResult {
  /** [rows, hiddenSize] float32, rows = nTokens or 1. */
  hidden: Float32Array;
  rows: number;
  queueMs: number;
  computeMs: number;
  /** Rows the next verification of this session should carry at most (worker-pool.ts `adviseRows`); absent: any. */
  advisedRows?: number;
}

export interface MiddleExecutor {
  run(request: MiddleRequest): Promise<MiddleResult>;
  drop(sessionId: number): void;
  readonly ready: boolean;
  /** Requests waiting or running, over all workers. */
  readonly pending: number;
  /** The fitted latency model g(X) of one run of X tokens. */
  latencyModel(): { baseMs: number; perTokenMs: number };
  close(): Promise<void>;
}
