/**
 * Random-weight shapes (`hat synth`, timing only) draft nothing useful: their own HAT sessions commit about one
 * token per round. For the fleet benchmark their HAT sessions are rebuilt with a trained model's acceptance:
 * - prompt chunks: the shape's own recorded HAT session (its frames, device times and results, as recorded);
 * - rounds: the trained model's recorded HAT session of the same turn — rows per verification and tokens committed
 *   on each — so the cloud sees the trained drafter's batch shapes and the devices commit at its pace;
 * - the shape's hidden states (rows taken from its own recorded verification frames: the cloud's work depends on
 *   the shapes, not the values) and its device times: a round of r rows costs the shape's measured U-shape round
 *   (1 row) plus (r − 1)/(R − 1) of the step to its HAT round at η = 0 (R rows: every draft kept going);
 *   the delay from a result to the commit is interpolated the same way.
 * Such rounds carry no recorded result to compare with (`hidden` empty): the replay checks the prompt's only.
 */
import { HatError } from '../../errors.ts';
import { encodeFrame, FrameFlags, HEADER_BYTES } from '../../runtime/protocol/frame.ts';
import { decodeHidden, encodeHidden } from '../../runtime/protocol/hidden-codec.ts';
import {
  frameHeader,
  type RecordedFrame,
  type RecordedResult,
  type SessionRecording,
} from '../../runtime/device/session-recorder.ts';

/** One verification round of a recording: rows sent and tokens committed on its result. */
export interface RoundShape {
  rows: number;
  committed: number;
}

export function roundsOf(recording: SessionRecording): RoundShape[] {
  return recording.frames.flatMap((frame, i) => {
    const header = frameHeader(frame);
    if (header.flags & FrameFlags.prefill) return [];
    return [{ rows: header.nTokens, committed: recording.results[i].commits.reduce((n, c) => n + c.count, 0) }];
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : 0;
};

export interface RoundCosts {
  /** Device time before a round's send and from its result to the commit, for 1 row and for `rows` rows. */
  one: { deviceMs: number; commitMs: number };
  many: { rows: number; deviceMs: number; commitMs: number };
}

/** Verification rounds of recordings: rows, device time before the send and the delay to the first commit. */
function timedRounds(recs: readonly SessionRecording[]) {
  return recs.flatMap((r) =>
    r.frames.flatMap((frame, i) => {
      const header = frameHeader(frame);
      if (header.flags & FrameFlags.prefill) return [];
      const commit = r.results[i].commits[0];
      return [{ rows: header.nTokens, deviceMs: frame.deviceMs, commitMs: commit?.afterMs ?? 0 }];
    }),
  );
}

/** A split's cost of a 1-row round: its U-shape sessions' median device time and commit delay. */
export function oneRowCost(uShape: readonly SessionRecording[]): RoundCosts['one'] {
  const one = timedRounds(uShape);
  if (!one.length) {
    throw new HatError(
      'BAD_OPTION',
      'the recordings hold no U-shape decode round to time a 1-row round by',
      'record sessions that generate more than one token (drop --recordings to record afresh)',
    );
  }
  return { deviceMs: median(one.map((r) => r.deviceMs)), commitMs: median(one.map((r) => r.commitMs)) };
}

/** The shape's own costs per round: U-shape rounds (1 row) and HAT rounds at η = 0 (the most rows). */
export function roundCosts(uShape: readonly SessionRecording[], hatAtZero: readonly SessionRecording[]): RoundCosts {
  const many = timedRounds(hatAtZero);
  if (!many.length) throw new HatError('INTERNAL', 'costs per round need recorded HAT rounds of the shape');
  return {
    one: oneRowCost(uShape),
    many: {
      rows: median(many.map((r) => r.rows)),
      deviceMs: median(many.map((r) => r.deviceMs)),
      commitMs: median(many.map((r) => r.commitMs)),
    },
  };
}

/** A round of `rows` rows: interpolated by rows between the 1-row round's costs and the many-row round's. */
export function costFor(costs: RoundCosts, rows: number): { deviceMs: number; commitMs: number } {
  const span = costs.many.rows - 1;
  const t = span > 0 ? Math.min(1, Math.max(0, (rows - 1) / span)) : 0;
  const at = (a: number, b: number) => a + t * (b - a);
  return {
    deviceMs: at(costs.one.deviceMs, costs.many.deviceMs),
    commitMs: at(costs.one.commitMs, costs.many.commitMs),
  };
}

/** Hidden-state rows of a recording's frames, decoded (a pool to build new frames from). */
function hiddenRows(recording: SessionRecording): Float32Array[] {
  const rows: Float32Array[] = [];
  for (const frame of recording.frames) {
    const header = frameHeader(frame);
    const values = decodeHidden(frame.bytes.subarray(HEADER_BYTES), header.nTokens, header.hiddenSize, header.dtype);
    const size = header.hiddenSize;
    for (let r = 0; r < header.nTokens; r++) rows.push(values.subarray(r * size, (r + 1) * size));
  }
  return rows;
}

/**
 * The shape's HAT session `own` (recorded at η = 0) with its rounds replaced by `pattern`'s (a trained model's
 * recorded HAT session), costed with `costs`.
 */
export function transplantRounds(
  own: SessionRecording,
  pattern: SessionRecording,
  costs: RoundCosts,
): SessionRecording {
  const prefill = own.frames.findIndex((f) => !(frameHeader(f).flags & FrameFlags.prefill));
  const chunks = prefill < 0 ? own.frames.length : prefill;
  if (chunks === 0) throw new HatError('INTERNAL', 'a HAT recording without prompt chunks');
  const frames: RecordedFrame[] = own.frames.slice(0, chunks);
  // The first token is committed on the prompt's last result, as recorded.
  const results: RecordedResult[] = own.results.slice(0, chunks);
  const pool = hiddenRows(own);
  const first = frameHeader(own.frames[0]);
  let next = 0;
  let past = own.promptTokens;
  let tokens = 1;
  for (const round of roundsOf(pattern)) {
    const rows = new Float32Array(round.rows * own.hiddenSize);
    for (let r = 0; r < round.rows; r++) rows.set(pool[next++ % pool.length], r * own.hiddenSize);
    const index = frames.length;
    const cost = costFor(costs, round.rows);
    frames.push({
      bytes: encodeFrame(
        {
          type: 'forward',
          flags: FrameFlags.allPositions,
          dtype: first.dtype,
          sessionId: first.sessionId,
          seq: index + 1,
          pastLength: past,
          nTokens: round.rows,
          hiddenSize: own.hiddenSize,
        },
        encodeHidden(rows, round.rows, own.hiddenSize, first.dtype),
      ),
      sentMs: 0,
      after: index - 1,
      deviceMs: cost.deviceMs,
    });
    results.push({
      arrivedMs: 0,
      rows: round.rows,
      hidden: new Float32Array(0),
      commits: round.committed ? [{ afterMs: cost.commitMs, count: round.committed }] : [],
    });
    past += round.committed;
    tokens += round.committed;
  }
  return {
    ...own,
    mode: 'hat',
    frames,
    results,
    tokens,
    synthetic:
      'rounds (rows per verification, tokens committed per round) from a recorded session of ' +
      `${pattern.manifestHash.slice(0, 12)} (${pattern.promptTokens}-token prompt); hidden states and device times ` +
      "from this split's own recordings",
  };
}
