/**
 * Recording of one real device session (`hat run-device --record FILE`, and the fleet benchmark's sessions): a
 * Verifier decorator that keeps, for every forward frame, the frame exactly as it went on the wire (taken from the
 * cloud client's uplink tap), when it was sent, which earlier result it waited for and the device's compute time
 * before it; and for every result, when it arrived, the middle output the device got, and how many tokens the
 * device committed on it and how long after its arrival. That is enough to replay the session's load on a cloud
 * (src/bench/fleet/replay.ts) with the device's own timing, and to check that the cloud answers it the same way.
 *
 * Dependencies. Results arrive in order, so "waited for result k" means every result up to k. A verification
 * round is sent after the device processed the previous result, so it waited for the latest result delivered
 * before it was sent; prompt chunks are sent as soon as they are computed and wait for none. (The one wait of
 * `--chunk auto` before its first measurement — a fourth probe chunk held until the first result — is kept as
 * device time, as it took in the recording.) Device time = send − max(previous send, awaited result's arrival).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { HatError } from '../../errors.ts';
import { writeFileWhole } from '../../file-checks.ts';
import { decodeFrame, FrameFlags, FrameType, type WireDTypeName } from '../protocol/frame.ts';
import type { ForwardOptions, ForwardResult, LatencyModel, ResumeStatus, Verifier } from './verifier.ts';

export const RECORDING_FORMAT = 'hat-recording/1';

export interface RecordedFrame {
  /** The forward frame exactly as the device sent it: 52-byte header (its session id and seq) + hidden payload. */
  bytes: Uint8Array;
  /** ms from the session's start (just after the handshake) to the send. */
  sentMs: number;
  /** Index of the latest result this frame waited for (so every earlier one too), or -1 for none. */
  after: number;
  /** Device compute before the send: from the later of the previous send and the awaited result's arrival. */
  deviceMs: number;
}

export interface RecordedResult {
  /** ms from the session's start to the result's arrival on the device (after any emulated downlink). */
  arrivedMs: number;
  rows: number;
  /** The middle part's output as the device decoded it, [rows, hiddenSize]; empty where not known (synthetic). */
  hidden: Float32Array;
  /** Tokens the device committed on this result, in batches, each with its delay after the arrival. */
  commits: Array<{ afterMs: number; count: number }>;
}

export interface SessionRecording {
  format: typeof RECORDING_FORMAT;
  manifestHash: string;
  hiddenSize: number;
  wire: WireDTypeName;
  /** What kind of session it was ('hat', 'u-shape', 'run-device', …). */
  mode: string;
  promptTokens: number;
  /** Tokens committed over the whole session. */
  tokens: number;
  /** The link the recording device used (its decisions — chunk sizes, drafts — adapted to it). */
  link: string;
  recordedAt: string;
  frames: RecordedFrame[];
  results: RecordedResult[];
  /** Where parts were not recorded but built (random-weight shapes: rounds from a trained model's recording). */
  synthetic?: string;
  /** Why this session cannot be replayed (a reconnect replayed history; the session failed), if it cannot. */
  unreplayable?: string;
}

export interface RecordingMeta {
  manifestHash: string;
  hiddenSize: number;
  mode: string;
  promptTokens: number;
  link: string;
}

/** Verifier decorator: everything goes to the inner verifier; the recorder notes sends, arrivals and timing. */
class RecordingVerifier implements Verifier {
  constructor(
    private readonly inner: Verifier,
    private readonly recorder: SessionRecorder,
  ) {}
  get wire(): WireDTypeName {
    return this.inner.wire;
  }
  get maxTokensPerFrame(): number {
    return this.inner.maxTokensPerFrame;
  }
  get initialLatency(): LatencyModel {
    return this.inner.initialLatency;
  }
  get bytesUp(): number {
    return this.inner.bytesUp;
  }
  get bytesDown(): number {
    return this.inner.bytesDown;
  }
  get resumeStatus(): ResumeStatus | undefined {
    return this.inner.resumeStatus;
  }

  forward(hidden: Float32Array, nTokens: number, pastLength: number, options: ForwardOptions): Promise<ForwardResult> {
    const after = this.recorder.awaitedBy(options);
    const sent = this.inner.forward(hidden, nTokens, pastLength, options);
    // Stamped once the frame is encoded and handed to the link: the replay sends it ready-made.
    const index = this.recorder.sent(after);
    return sent.then((result) => {
      this.recorder.answered(index, result);
      return result;
    });
  }

  close(): void {
    this.inner.close();
  }
}

export class SessionRecorder {
  private t0 = performance.now();
  private readonly frames: Array<Omit<RecordedFrame, 'bytes'>> = [];
  private readonly uplink: Uint8Array[] = [];
  private readonly results: RecordedResult[] = [];
  private delivered = -1;
  private problem?: string;
  private inner?: Verifier;

  /** The cloud client's uplink tap (CloudClientOptions.recordUplink): keeps forward frames as sent. */
  readonly onUplink = (bytes: Uint8Array): void => {
    if (bytes[6] === FrameType.forward) this.uplink.push(bytes); // the type byte of the header
  };

  /** Wraps the session's verifier; the session's clock starts here (after the handshake). */
  wrap(inner: Verifier): Verifier {
    this.inner = inner;
    this.t0 = performance.now();
    return new RecordingVerifier(inner, this);
  }

  private now(): number {
    return performance.now() - this.t0;
  }

  /** The generation loop's onTokens: `count` tokens committed now, on the latest result delivered. */
  committed(count: number): void {
    const result = this.results[this.delivered];
    if (!result) {
      this.problem ??= 'tokens were committed before any result arrived';
      return;
    }
    result.commits.push({ afterMs: this.now() - result.arrivedMs, count });
  }

  /** @internal The result a frame about to be sent waited for (see the module comment). */
  awaitedBy(options: ForwardOptions): number {
    return options.prefill ? -1 : this.delivered;
  }

  /** @internal */
  sent(after: number): number {
    const sentMs = this.now();
    const previous = this.frames.at(-1)?.sentMs ?? 0;
    const readyAt = Math.max(previous, after >= 0 ? this.results[after].arrivedMs : 0);
    this.frames.push({ sentMs, after, deviceMs: Math.max(0, sentMs - readyAt) });
    return this.frames.length - 1;
  }

  /** @internal Results resolve in order, so the latest delivered is this one. */
  answered(index: number, result: ForwardResult): void {
    this.results[index] = { arrivedMs: this.now(), rows: result.rows, hidden: result.hidden.slice(), commits: [] };
    this.delivered = Math.max(this.delivered, index);
  }

  /** The recording so far (call after the generation ended). */
  finish(meta: RecordingMeta): SessionRecording {
    const wire = this.inner?.wire ?? 'fp16';
    let unreplayable = this.problem;
    const reconnects = this.inner?.resumeStatus?.reconnects ?? 0;
    if (reconnects > 0) unreplayable ??= `the session reconnected ${reconnects} time(s) and replayed its history`;
    else if (this.inner?.resumeStatus?.fallback) unreplayable ??= 'the small model took over from the cloud';
    if (this.uplink.length !== this.frames.length) {
      unreplayable ??= `${this.uplink.length} forward frames went on the wire for ${this.frames.length} requests`;
    }
    const answered = this.results.filter(Boolean).length;
    if (answered !== this.frames.length) {
      unreplayable ??= `${this.frames.length - answered} request(s) were never answered`;
    }
    const frames = this.frames.map((f, i) => ({ ...f, bytes: this.uplink[i] ?? new Uint8Array(0) }));
    const results = Array.from(
      { length: this.frames.length },
      (_, i) => this.results[i] ?? { arrivedMs: 0, rows: 0, hidden: new Float32Array(0), commits: [] },
    );
    const tokens = results.reduce((n, r) => n + r.commits.reduce((m, c) => m + c.count, 0), 0);
    return {
      format: RECORDING_FORMAT,
      ...meta,
      wire,
      tokens,
      recordedAt: new Date().toISOString(),
      frames,
      results,
      ...(unreplayable ? { unreplayable } : {}),
    };
  }
}

/** Header fields of a recorded frame (the replay patches only the session id). */
export function frameHeader(frame: RecordedFrame) {
  return decodeFrame(frame.bytes, { maxPayloadBytes: frame.bytes.length }).header;
}

export function isPrefillFrame(frame: RecordedFrame): boolean {
  return (frameHeader(frame).flags & FrameFlags.prefill) !== 0;
}

// --- files: JSON, binary fields base64 (Float32Array bytes little-endian, as every platform hat runs on) ---

const base64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
const bytesOf = (text: string) => new Uint8Array(Buffer.from(text, 'base64'));
function floatsOf(text: string): Float32Array {
  const bytes = bytesOf(text);
  if (bytes.byteLength % 4) {
    throw new HatError('BAD_OPTION', 'a recorded result is not a whole number of float32 values');
  }
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

const fileSchema = z.object({
  format: z.literal(RECORDING_FORMAT),
  manifestHash: z.string(),
  hiddenSize: z.number().int().positive(),
  wire: z.enum(['fp32', 'fp16', 'int8']),
  mode: z.string(),
  promptTokens: z.number().int().nonnegative(),
  tokens: z.number().int().nonnegative(),
  link: z.string(),
  recordedAt: z.string(),
  frames: z.array(z.object({ bytes: z.string(), sentMs: z.number(), after: z.number().int(), deviceMs: z.number() })),
  results: z.array(
    z.object({
      arrivedMs: z.number(),
      rows: z.number().int().nonnegative(),
      hidden: z.string(),
      commits: z.array(z.object({ afterMs: z.number(), count: z.number().int().positive() })),
    }),
  ),
  synthetic: z.string().optional(),
  unreplayable: z.string().optional(),
});

/**
 * How the file's fields fail to hang together, if they do: a replay waits on `after` for a result that must come
 * (an index past the recorded ones hung the fleet benchmark) and reads one result per frame.
 */
function inconsistency(r: z.infer<typeof fileSchema>): string | undefined {
  if (!r.frames.length) return 'it holds no frame (a session sends at least its prompt)';
  if (r.results.length !== r.frames.length) return `${r.frames.length} frames but ${r.results.length} results`;
  const late = r.frames.findIndex((frame, i) => frame.after < -1 || frame.after >= i);
  if (late >= 0) return `frames.${late}.after is ${r.frames[late].after}: a frame waits for -1 or an earlier result`;
  return undefined;
}

export function recordingToJson(recording: SessionRecording): string {
  return `${JSON.stringify({
    ...recording,
    frames: recording.frames.map((f) => ({ ...f, bytes: base64(f.bytes) })),
    results: recording.results.map((r) => ({
      ...r,
      hidden: base64(new Uint8Array(r.hidden.buffer, r.hidden.byteOffset, r.hidden.byteLength)),
    })),
  })}\n`;
}

export function recordingFromJson(text: string, source: string): SessionRecording {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new HatError(
      'BAD_OPTION',
      `${source} is not JSON`,
      'give a file written by `hat run-device --record` or `hat bench --fleet`',
    );
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = `${issue.path.join('.')}: ${issue.message}`;
    throw new HatError('BAD_OPTION', `${source} is not a ${RECORDING_FORMAT} recording: ${where}`);
  }
  const r = parsed.data;
  const broken = inconsistency(r);
  if (broken) throw new HatError('BAD_OPTION', `${source} is not a ${RECORDING_FORMAT} recording: ${broken}`);
  return {
    ...r,
    frames: r.frames.map((f) => ({ ...f, bytes: bytesOf(f.bytes) })),
    results: r.results.map((x) => ({ ...x, hidden: floatsOf(x.hidden) })),
  };
}

/**
 * Checked before the session starts, so a bad --record path fails at once rather than after the whole generation:
 * an existing file is not replaced, and the folder must exist.
 */
export function assertRecordingTarget(file: string): void {
  if (existsSync(file)) {
    throw new HatError('OUTPUT_EXISTS', `--record ${file} already exists`, 'pick a new file name, or delete it first');
  }
  const folder = dirname(resolve(file));
  if (!existsSync(folder) || !statSync(folder).isDirectory()) {
    throw new HatError('OUTPUT_EXISTS', `--record ${file}: folder ${folder} does not exist`, 'create it first');
  }
}

/** Written whole or not at all: to a temporary file beside it, then renamed. */
export function writeRecording(file: string, recording: SessionRecording): void {
  writeFileWhole(file, recordingToJson(recording), `the recording ${file}`);
}

export function readRecording(file: string): SessionRecording {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new HatError('FILE_NOT_FOUND', `recording ${file} cannot be read`);
  }
  return recordingFromJson(text, file);
}
