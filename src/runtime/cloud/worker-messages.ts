/** Messages between the worker pool (main thread) and a middle-part worker. */
import type { MiddleRequest } from './executor.ts';

export type WorkerTask =
  | ({ kind: 'run' } & MiddleRequest)
  | { kind: 'drop'; sessionId: number };

export type WorkerReply =
  | { kind: 'ready' }
  | { kind: 'load-failed'; code: string; message: string }
  | { kind: 'result'; sessionId: number; hidden: Float32Array; rows: number; computeMs: number }
  | { kind: 'run-failed'; sessionId: number; message: string };
