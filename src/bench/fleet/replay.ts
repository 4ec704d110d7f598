/**
 * One EMULATED device: replays a recorded session (src/runtime/device/session-recorder.ts) against a real
 * serve-cloud over its own WebSocket session, through its own emulated link. No model runs here: each recorded
 * frame is sent as recorded (only the session id is patched in), once the results it waited for have arrived and
 * the device's recorded compute time has passed; tokens are "committed" on each result as recorded (same counts,
 * same delay after the result). What comes back is compared with what the recorded session got.
 */
import WebSocket from 'ws';
import { HatError } from '../../errors.ts';
import { EmulatedLink, type LinkSpec } from '../../runtime/link.ts';
import { decodeFrame, decodeJson, encodeFrame, encodeJson } from '../../runtime/protocol/frame.ts';
import { decodeHidden } from '../../runtime/protocol/hidden-codec.ts';
import type { SessionRecording } from '../../runtime/device/session-recorder.ts';

export interface ReplayOptions {
  url: string;
  link: LinkSpec;
  /** Seeds this device's link jitter. */
  seed: number;
  token?: string;
  /** Aborts the session (it then fails) when signalled. */
  signal?: AbortSignal;
}

export interface ReplayOutcome {
  mode: string;
  promptTokens: number;
  /** performance.now() at the session's start (after the handshake) and at its last token. */
  startedAt: number;
  endedAt: number;
  /** Token commits: when (performance.now()) and how many. */
  commits: Array<{ at: number; count: number }>;
  tokens: number;
  /** Results compared with the recording, byte-identical ones, and the largest difference of the others. */
  checked: number;
  identical: number;
  maxAbsDiff: number;
  /** How late each frame left against its replay schedule (timer and event-loop delay of the emulation). */
  lateMs: number[];
  error?: string;
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    if (ms < 1) setImmediate(resolve);
    else setTimeout(resolve, ms);
  });

/** The largest |a − b| (0 when byte-identical); Infinity when the lengths differ. */
export function maxDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  if (Buffer.compare(bytes(a), bytes(b)) === 0) return 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) max = d; // NaN propagates as a difference
  }
  return max;
}

/** The recorded frame with this session's id (everything else — seq included — is as the device sent it). */
function withSession(bytes: Uint8Array, sessionId: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(12, sessionId, true);
  return copy;
}

export async function replaySession(recording: SessionRecording, options: ReplayOptions): Promise<ReplayOutcome> {
  if (recording.unreplayable) {
    throw new HatError('BAD_OPTION', `this recording cannot be replayed: ${recording.unreplayable}`);
  }
  const outcome: ReplayOutcome = {
    mode: recording.mode,
    promptTokens: recording.promptTokens,
    startedAt: performance.now(),
    endedAt: 0,
    commits: [],
    tokens: 0,
    checked: 0,
    identical: 0,
    maxAbsDiff: 0,
    lateMs: [],
  };
  if (options.signal?.aborted) {
    return { ...outcome, endedAt: performance.now(), error: 'the replay was stopped before the session started' };
  }
  const link = new EmulatedLink(options.link, options.seed);
  const socket = new WebSocket(options.url, { perMessageDeflate: false });
  const n = recording.frames.length;
  const arrived: number[] = [];
  const waiters = new Map<number, () => void>();
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let welcome: ((sessionId: number) => void) | undefined;
  const pendingCommits: Array<Promise<void>> = [];
  const fail = (error: Error) => {
    failure ??= error;
    for (const w of waiters.values()) w();
    wake?.();
  };
  const onAbort = () => fail(new HatError('NETWORK', 'the replay was stopped before the session ended'));
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const onResult = (payload: Uint8Array, rows: number, dtype: ReturnType<typeof decodeFrame>['header']['dtype']) => {
    const index = arrived.length;
    const at = performance.now();
    arrived.push(at);
    const recorded = recording.results[index];
    if (!recorded) return fail(new HatError('PROTOCOL', `result ${index} of a session that sent ${n} frames`));
    if (rows !== recorded.rows) {
      return fail(new HatError('PROTOCOL', `result ${index} has ${rows} rows, recorded ${recorded.rows}`));
    }
    if (recorded.hidden.length) {
      const diff = maxDifference(decodeHidden(payload, rows, recording.hiddenSize, dtype), recorded.hidden);
      outcome.checked++;
      if (diff === 0) outcome.identical++;
      outcome.maxAbsDiff = Math.max(outcome.maxAbsDiff, diff);
    }
    for (const commit of recorded.commits) {
      pendingCommits.push(
        sleep(at + commit.afterMs - performance.now()).then(() => {
          outcome.commits.push({ at: performance.now(), count: commit.count });
          outcome.tokens += commit.count;
        }),
      );
    }
    waiters.get(index)?.();
    waiters.delete(index);
  };

  socket.on('message', (data: Buffer) => {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    link.down.send(bytes.length, () => {
      try {
        const frame = decodeFrame(bytes, { maxPayloadBytes: 1 << 30 });
        if (frame.header.type === 'welcome') welcome?.((decodeJson(frame.payload) as { sessionId: number }).sessionId);
        else if (frame.header.type === 'result') onResult(frame.payload, frame.header.nTokens, frame.header.dtype);
        else if (frame.header.type === 'error') {
          const body = decodeJson(frame.payload) as { code?: string; message?: string };
          fail(new HatError('NETWORK', `the cloud closed the session: ${body.code ?? 'ERROR'}: ${body.message ?? ''}`));
        }
      } catch (error) {
        fail(error as Error);
      }
    });
  });
  socket.on('close', () => {
    if (arrived.length < n) fail(new HatError('NETWORK', 'the cloud connection closed'));
  });
  socket.on('error', (error: Error) => {
    fail(new HatError('NETWORK', `cannot reach the cloud at ${options.url}: ${error.message}`));
  });

  const send = (bytes: Uint8Array) =>
    link.up.send(bytes.length, () => {
      if (socket.readyState === WebSocket.OPEN) socket.send(bytes, { binary: true });
    });
  const resultArrived = (index: number) =>
    new Promise<void>((resolve) => {
      if (arrived.length > index || failure) resolve();
      else waiters.set(index, resolve);
    });

  try {
    const sessionId = await new Promise<number>((resolve, reject) => {
      welcome = resolve;
      wake = () => reject(failure);
      socket.once('open', () => {
        (socket as unknown as { _socket?: { setNoDelay(v: boolean): void } })._socket?.setNoDelay(true);
        send(
          encodeFrame(
            { type: 'hello', seq: 0 },
            encodeJson({
              manifestHash: recording.manifestHash,
              token: options.token,
              client: `hat-fleet/${process.pid}`,
            }),
          ),
        );
      });
    });
    wake = undefined;
    outcome.startedAt = performance.now();
    let previousSend = outcome.startedAt;
    for (let i = 0; i < n && !failure; i++) {
      const frame = recording.frames[i];
      if (frame.after >= 0) await resultArrived(frame.after);
      if (failure) break;
      const ready = Math.max(previousSend, frame.after >= 0 ? arrived[frame.after] : outcome.startedAt);
      const due = ready + frame.deviceMs;
      await sleep(due - performance.now());
      const now = performance.now();
      outcome.lateMs.push(Math.max(0, now - due));
      previousSend = now;
      send(withSession(frame.bytes, sessionId));
    }
    if (!failure) await resultArrived(n - 1);
    await Promise.all(pendingCommits);
    if (failure) throw failure;
    outcome.endedAt = outcome.commits.at(-1)?.at ?? performance.now();
    if (outcome.tokens !== recording.tokens) {
      throw new HatError('INTERNAL', `replayed ${outcome.tokens} tokens of a recording of ${recording.tokens}`);
    }
    send(encodeFrame({ type: 'bye', sessionId, seq: n + 1 }));
  } catch (error) {
    outcome.error = (error as Error).message;
    outcome.endedAt = performance.now();
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    setTimeout(() => socket.terminate(), 50 + link.spec.up.latencyMs * 4).unref();
  }
  return outcome;
}
