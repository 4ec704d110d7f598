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
import {
  decodeFrame,
  decodeJson,
  encodeFrame,
  encodeJson,
  FrameFlags,
  HEADER_BYTES,
  type FrameHeader,
} from '../../runtime/protocol/frame.ts';
import { errorBodySchema, errorFromBody, parseControl, ROWS_ADVICE } from '../../runtime/protocol/control.ts';
import { decodeHidden, encodeHidden } from '../../runtime/protocol/hidden-codec.ts';
import { frameHeader, type SessionRecording } from '../../runtime/device/session-recorder.ts';
import { costFor } from './transplant.ts';
import { ttftPath, type PromptRequestTimes, type TtftPath } from './ttft-path.ts';

export interface ReplayOptions {
  url: string;
  link: LinkSpec;
  /** Seeds this device's link jitter. */
  seed: number;
  token?: string;
  /** Aborts the session (it then fails) when signalled. */
  signal?: AbortSignal;
  /**
   * Follow the cloud's rows advice (SIMULATION, see splitRound): the hello lists 'rows-advice', and a recorded
   * verification of more rows than the latest result advised is sent as consecutive rounds of at most that many.
   * `oneRow` is the split's own cost of a 1-row round (its U-shape sessions' median device time and commit delay):
   * a split round's device time and commit delay are interpolated between it and the recorded round's by rows.
   */
  advice?: { oneRow: { deviceMs: number; commitMs: number } };
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
  /** Recorded verification rounds sent as several because the cloud advised fewer rows, and the rounds sent. */
  split: { rounds: number; into: number };
  /**
   * Rounds after the first token (requests sent once a result had committed tokens; each part of a split round is
   * one): how many, and the sums of their device time before the send and of their round trips (send to result:
   * the EMULATED link both ways and serve-cloud's queue and compute).
   */
  decode: { rounds: number; deviceMs: number; roundTripMs: number };
  /** Where the time from the session's start to its first token went (ttft-path.ts); absent on a failed session. */
  ttftPath?: TtftPath;
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

/** The recorded frame with this session's id and sequence number (everything else is as the device sent it). */
function withSession(bytes: Uint8Array, sessionId: number, seq: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(12, sessionId, true);
  new DataView(copy.buffer).setUint32(16, seq, true);
  return copy;
}

/**
 * One request as sent: result rows [from, to) of recorded frame `frame` (a whole frame: all its recorded result
 * rows), with its own commit when a round was split.
 */
interface Sent {
  frame: number;
  from: number;
  to: number;
  /** Set for a part of a split round: what it commits and when; else the recording's commits stand. */
  commit?: { count: number; afterMs: number };
  /** The frame's last part: its arrival is the recorded result's. */
  last: boolean;
  /** Sent after a result that committed tokens (a decode round, not a prompt chunk). */
  decode: boolean;
  /** The device time waited before it went, and when it went (performance.now()). */
  deviceMs?: number;
  sentAt?: number;
  /** When it left the EMULATED uplink, when its result left the cloud's socket, and the cloud's compute for it. */
  deliveredAt?: number;
  receivedAt?: number;
  computeMs?: number;
}

/**
 * The next part of a recorded verification round when the cloud advises at most `advice` rows (SIMULATION of a
 * device that drafts fewer). Row j of a round is the input part's output for the token at past + j: the pending
 * token, then the drafts; the round committed c tokens, so its first c − 1 drafts were accepted (greedy). A part
 * of rows [from, to) starts at a committed token (from ≤ c − 1) and holds the drafts the device drafted after it,
 * so a device drafting at most to − from − 1 could have sent exactly it: it commits the accepted drafts among its
 * rows plus the target's next token, min(to − 1, c − 1) − from + 1 tokens, and the next part starts where it
 * stopped. The parts commit c tokens in all, and each part's result rows are the
 * recorded result's rows [from, to) (causal attention over the same cache), so they are still checked.
 */
export function splitRound(
  rows: number,
  committed: number,
  from: number,
  advice: number,
): { to: number; count: number; last: boolean } {
  const accepted = committed - 1;
  const to = Math.min(rows, from + Math.max(1, advice));
  const end = Math.min(to - 1, accepted);
  return { to, count: end - from + 1, last: end >= accepted };
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
    split: { rounds: 0, into: 0 },
    decode: { rounds: 0, deviceMs: 0, roundTripMs: 0 },
  };
  if (options.signal?.aborted) {
    return { ...outcome, endedAt: performance.now(), error: 'the replay was stopped before the session started' };
  }
  const link = new EmulatedLink(options.link, options.seed);
  const socket = new WebSocket(options.url, { perMessageDeflate: false });
  const n = recording.frames.length;
  const sent: Sent[] = [];
  /** Arrival of each sent request's result, in send order. */
  const arrived: number[] = [];
  /** Arrival of each recorded frame's (last part's) result. */
  const done = new Map<number, number>();
  const waiters = new Map<number, () => void>();
  let advice = 0;
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

  const commitLater = (at: number, commit: { afterMs: number; count: number }) =>
    pendingCommits.push(
      sleep(at + commit.afterMs - performance.now()).then(() => {
        outcome.commits.push({ at: performance.now(), count: commit.count });
        outcome.tokens += commit.count;
      }),
    );

  const onResult = (payload: Uint8Array, header: FrameHeader, receivedAt: number) => {
    const index = arrived.length;
    const at = performance.now();
    arrived.push(at);
    const part = sent[index];
    if (!part) return fail(new HatError('PROTOCOL', `result ${index} of a session that sent ${sent.length} frames`));
    part.receivedAt = receivedAt;
    part.computeMs = header.computeMs;
    const recorded = recording.results[part.frame];
    const rows = part.to - part.from;
    if (header.nTokens !== rows) {
      return fail(new HatError('PROTOCOL', `result ${index} has ${header.nTokens} rows, expected ${rows}`));
    }
    if (recorded.hidden.length) {
      const size = recording.hiddenSize;
      // A split part checks its rows of the recorded result; a whole frame all of it, as recorded.
      const expected = part.commit ? recorded.hidden.subarray(part.from * size, part.to * size) : recorded.hidden;
      const diff = maxDifference(decodeHidden(payload, rows, size, header.dtype), expected);
      outcome.checked++;
      if (diff === 0) outcome.identical++;
      outcome.maxAbsDiff = Math.max(outcome.maxAbsDiff, diff);
    }
    advice = header.advisedRows;
    if (part.decode && part.sentAt !== undefined) {
      outcome.decode.rounds++;
      outcome.decode.deviceMs += part.deviceMs ?? 0;
      outcome.decode.roundTripMs += at - part.sentAt;
    }
    for (const commit of part.commit ? [part.commit] : recorded.commits) commitLater(at, commit);
    if (part.last) done.set(part.frame, at);
    waiters.get(index)?.();
    waiters.delete(index);
  };

  socket.on('message', (data: Buffer) => {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const receivedAt = performance.now();
    link.down.send(bytes.length, () => {
      try {
        const frame = decodeFrame(bytes, { maxPayloadBytes: 1 << 30 });
        if (frame.header.type === 'welcome') welcome?.((decodeJson(frame.payload) as { sessionId: number }).sessionId);
        else if (frame.header.type === 'result') onResult(frame.payload, frame.header, receivedAt);
        else if (frame.header.type === 'error') {
          fail(errorFromBody(parseControl(errorBodySchema, decodeJson(frame.payload), 'error frame')));
        }
      } catch (error) {
        fail(error as Error);
      }
    });
  });
  socket.on('close', () => {
    if (!done.has(n - 1)) fail(new HatError('NETWORK', 'the cloud connection closed'));
  });
  socket.on('error', (error: Error) => {
    fail(new HatError('NETWORK', `cannot reach the cloud at ${options.url}: ${error.message}`));
  });

  let seq = 0;
  const send = (bytes: Uint8Array, entry?: Sent) =>
    link.up.send(bytes.length, () => {
      if (entry) entry.deliveredAt = performance.now();
      if (socket.readyState === WebSocket.OPEN) socket.send(bytes, { binary: true });
    });
  const arrival = (index: number) =>
    new Promise<number>((resolve) => {
      if (arrived.length > index || failure) resolve(arrived[index]);
      else waiters.set(index, () => resolve(arrived[index]));
    });
  /** When the result of recorded frame `frame` (its last part) arrived. */
  const frameDone = async (frame: number): Promise<number> => {
    for (;;) {
      const at = done.get(frame);
      if (at !== undefined || failure) return at ?? 0;
      await arrival(arrived.length);
    }
  };

  try {
    const sessionId = await new Promise<number>((resolve, reject) => {
      welcome = resolve;
      wake = () => reject(failure);
      socket.once('open', () => {
        (socket as unknown as { _socket?: { setNoDelay(v: boolean): void } })._socket?.setNoDelay(true);
        send(
          encodeFrame(
            { type: 'hello', seq: seq++ },
            encodeJson({
              manifestHash: recording.manifestHash,
              token: options.token,
              client: `hat-fleet/${process.pid}`,
              ...(options.advice ? { features: [ROWS_ADVICE] } : {}),
            }),
          ),
        );
      });
    });
    wake = undefined;
    outcome.startedAt = performance.now();
    let previousSend = outcome.startedAt;
    /** Waits out the device time before a send, then sends `entry`'s bytes. */
    const sendAt = async (ready: number, deviceMs: number, bytes: Uint8Array, entry: Sent) => {
      const due = ready + deviceMs;
      await sleep(due - performance.now());
      const now = performance.now();
      outcome.lateMs.push(Math.max(0, now - due));
      previousSend = now;
      entry.deviceMs = deviceMs;
      entry.sentAt = now;
      send(withSession(bytes, sessionId, seq++), entry);
    };
    for (let i = 0; i < n && !failure; i++) {
      const frame = recording.frames[i];
      const awaited = frame.after >= 0 ? await frameDone(frame.after) : outcome.startedAt;
      if (failure) break;
      const ready = Math.max(previousSend, awaited);
      // Only a device that follows advice, and has some, looks into the frame.
      const header = options.advice && advice > 0 ? frameHeader(frame) : undefined;
      const committed = recording.results[i].commits.reduce((sum, c) => sum + c.count, 0);
      const splittable =
        header !== undefined &&
        !(header.flags & FrameFlags.prefill) &&
        header.flags & FrameFlags.allPositions &&
        committed >= 1 &&
        committed <= header.nTokens &&
        header.nTokens > advice;
      const decode = frame.after >= 0 && recording.results[frame.after].commits.length > 0;
      if (splittable) {
        await sendSplit(i, header, ready, committed, decode);
      } else {
        const entry: Sent = { frame: i, from: 0, to: recording.results[i].rows, last: true, decode };
        sent.push(entry);
        await sendAt(ready, frame.deviceMs, frame.bytes, entry);
      }
    }
    if (!failure) await frameDone(n - 1);
    await Promise.all(pendingCommits);
    if (failure) throw failure;
    outcome.endedAt = outcome.commits.at(-1)?.at ?? performance.now();
    outcome.ttftPath = promptPath(sent, outcome);
    if (outcome.tokens !== recording.tokens) {
      throw new HatError('INTERNAL', `replayed ${outcome.tokens} tokens of a recording of ${recording.tokens}`);
    }
    send(encodeFrame({ type: 'bye', sessionId, seq: seq++ }));

    /** Recorded round `i` as consecutive rounds of at most the advised rows, each sent after the last's result. */
    async function sendSplit(
      i: number,
      header: FrameHeader,
      ready: number,
      committed: number,
      decode: boolean,
    ): Promise<void> {
      const frame = recording.frames[i];
      const size = header.hiddenSize;
      const hidden = decodeHidden(frame.bytes.subarray(HEADER_BYTES), header.nTokens, size, header.dtype);
      const one = options.advice!.oneRow;
      const costs = {
        one,
        many: {
          rows: header.nTokens,
          deviceMs: frame.deviceMs,
          commitMs: recording.results[i].commits[0]?.afterMs ?? one.commitMs,
        },
      };
      outcome.split.rounds++;
      let from = 0;
      for (;;) {
        // Advice withdrawn mid-round (0): the rest goes as one part.
        const part = splitRound(header.nTokens, committed, from, advice || header.nTokens);
        const rows = part.to - from;
        const bytes = encodeFrame(
          { ...header, pastLength: header.pastLength + from, nTokens: rows },
          encodeHidden(hidden.subarray(from * size, part.to * size), rows, size, header.dtype),
        );
        const cost = costFor(costs, rows);
        const entry: Sent = {
          frame: i,
          from,
          to: part.to,
          commit: { count: part.count, afterMs: cost.commitMs },
          last: part.last,
          // A later part follows its predecessor's result, which committed tokens.
          decode: decode || from > 0,
        };
        sent.push(entry);
        outcome.split.into++;
        await sendAt(ready, cost.deviceMs, bytes, entry);
        if (part.last || failure) return;
        ready = await arrival(sent.length - 1);
        if (failure) return;
        from += part.count;
      }
    }
  } catch (error) {
    outcome.error = (error as Error).message;
    outcome.endedAt = performance.now();
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    setTimeout(() => socket.terminate(), 50 + link.spec.up.latencyMs * 4).unref();
  }
  return outcome;
}

/** The critical path to the first token over the requests sent before it (the prompt's chunks). */
function promptPath(sent: readonly Sent[], outcome: ReplayOutcome): TtftPath | undefined {
  const prompt: PromptRequestTimes[] = [];
  for (const entry of sent) {
    if (entry.decode) break;
    const { sentAt, deliveredAt, receivedAt, computeMs } = entry;
    if (sentAt === undefined || deliveredAt === undefined || receivedAt === undefined || computeMs === undefined) {
      return undefined;
    }
    prompt.push({ sentAt, deliveredAt, receivedAt, computeMs });
  }
  if (outcome.commits.length === 0) return undefined;
  return ttftPath(prompt, outcome.startedAt, Math.min(...outcome.commits.map((c) => c.at)));
}
