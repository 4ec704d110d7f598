/** Messages between the worker pool (main thread) and a middle-part worker. */
import type { ErrorData } from '../../errors.ts';
import type { MiddleRequest } from './executor.ts';
import type { EngineRun } from './middle-engine.ts';
import type { ProbeTime } from './batch-knee.ts';

export type WorkerTask =
  /** One batch the scheduler picked: at most one request per session, run as one padded run when it can. */
  | { kind: 'run'; requests: MiddleRequest[] }
  | { kind: 'drop'; sessionId: number }
  /** Time one run of each row count (batch-knee.ts), before any session arrives. */
  | { kind: 'probe'; rows: number[] };

export type WorkerReply =
  | { kind: 'ready' }
  | ({ kind: 'load-failed' } & ErrorData)
  | ({ kind: 'ran' } & EngineRun)
  | { kind: 'probed'; times: ProbeTime[] }
  | { kind: 'probe-failed'; message: string };
