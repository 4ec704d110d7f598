/**
 * Protocol fuzzing and connection churn against a running serve-cloud (the reliability suite): mutated frames
 * across every header field and the payload from many sessions, while one healthy session's results are checked
 * exactly against what the same requests returned before the fuzzing started; and connect/disconnect cycles,
 * abrupt ones included, with the server's memory and open descriptors read from /proc before and after.
 */
import { readdirSync, readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { encodeFrame, encodeJson, FrameFlags, HEADER_BYTES } from '../runtime/protocol/frame.ts';
import { encodeHidden } from '../runtime/protocol/hidden-codec.ts';
import { CloudClient } from '../runtime/device/cloud-client.ts';
import { seededRandom } from '../random.ts';

export interface FuzzTarget {
  url: string;
  manifestHash: string;
  hiddenSize: number;
  /** serve-cloud's process id, for /proc readings. */
  pid: number;
}

export interface FuzzReport {
  framesTried: number;
  sessions: number;
  /** Mutations by kind. */
  kinds: Record<string, number>;
  /** False if the server process died, or stopped accepting sessions, during the fuzzing. */
  serverAlive: boolean;
  healthyRounds: number;
  /** Healthy-session results that differed from the first one, or failed (one for a failed session). */
  healthyMismatches: number;
  /** Why the fuzzing ended before `frames` mutated frames, if it did. */
  stoppedEarly?: string;
}

/**
 * The header fields a mutation may hit (offset, width in bytes, or 'f32' for the float fields) — every field of
 * the 52-byte header (src/runtime/protocol/frame.ts) — and payload-level mutations.
 */
const FIELDS: Array<[string, number, 1 | 2 | 4 | 'f32']> = [
  ['magic', 0, 4],
  ['version', 4, 2],
  ['type', 6, 1],
  ['flags', 7, 1],
  ['dtype', 8, 1],
  ['reserved', 9, 1],
  ['advisedRows', 10, 2],
  ['sessionId', 12, 4],
  ['seq', 16, 4],
  ['pastLength', 20, 4],
  ['nTokens', 24, 4],
  ['hiddenSize', 28, 4],
  ['queueMs', 32, 'f32'],
  ['computeMs', 36, 'f32'],
  ['latencyBaseMs', 40, 'f32'],
  ['latencyPerTokenMs', 44, 'f32'],
  ['payloadBytes', 48, 4],
];
const FLOAT_BOUNDARIES = [0, -1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3.4e38, -3.4e38];
/** A session that neither opens nor is refused within this long counts as refused. */
const SESSION_OPEN_TIMEOUT_MS = 5_000;
/** This many refused sessions in a row: the server no longer accepts sessions, and the fuzzing stops. */
const MAX_REFUSED_IN_A_ROW = 20;
/** How long the healthy session's request in flight may take to finish once the fuzzing has stopped. */
const HEALTHY_DRAIN_MS = 10_000;
const PAYLOAD_KINDS = ['truncate', 'extend', 'nan', 'random-bytes', 'empty', 'text'];

function forwardFrame(
  sessionId: number,
  seq: number,
  pastLength: number,
  rows: number,
  hidden: number,
  random: () => number,
): Uint8Array {
  const values = Float32Array.from({ length: rows * hidden }, () => random() - 0.5);
  return encodeFrame(
    {
      type: 'forward',
      dtype: 'fp32',
      sessionId,
      seq,
      pastLength,
      nTokens: rows,
      hiddenSize: hidden,
      flags: FrameFlags.allPositions,
    },
    encodeHidden(values, rows, hidden, 'fp32'),
  );
}

/** One mutated frame: a header field set to a random or boundary value, or the payload broken. */
function mutate(frame: Uint8Array, random: () => number): { bytes: Uint8Array | string; kind: string } {
  const pick = Math.floor(random() * (FIELDS.length + PAYLOAD_KINDS.length));
  if (pick < FIELDS.length) {
    const [name, offset, width] = FIELDS[pick];
    const bytes = frame.slice();
    const view = new DataView(bytes.buffer);
    if (width === 'f32') {
      const boundary = FLOAT_BOUNDARIES[Math.floor(random() * FLOAT_BOUNDARIES.length)];
      view.setFloat32(offset, random() < 0.5 ? boundary : (random() - 0.5) * 2e6, true);
      return { bytes, kind: name };
    }
    const boundary = [0, 1, 0xff, 0x7fffffff, 0xffffffff][Math.floor(random() * 5)];
    const value = random() < 0.5 ? boundary : Math.floor(random() * 2 ** (8 * width));
    if (width === 1) view.setUint8(offset, value & 0xff);
    else if (width === 2) view.setUint16(offset, value & 0xffff, true);
    else view.setUint32(offset, value >>> 0, true);
    return { bytes, kind: name };
  }
  const kind = PAYLOAD_KINDS[pick - FIELDS.length];
  switch (kind) {
    case 'truncate':
      return { bytes: frame.slice(0, Math.floor(random() * frame.length)), kind };
    case 'extend':
      return {
        bytes: Uint8Array.from([...frame, ...Array.from({ length: 1 + Math.floor(random() * 64) }, () => 7)]),
        kind,
      };
    case 'nan': {
      const bytes = frame.slice();
      new DataView(bytes.buffer).setFloat32(
        HEADER_BYTES + 4 * Math.floor(random() * ((bytes.length - HEADER_BYTES) / 4)),
        Number.NaN,
        true,
      );
      return { bytes, kind };
    }
    case 'random-bytes':
      return { bytes: Uint8Array.from({ length: Math.floor(random() * 256) }, () => Math.floor(random() * 256)), kind };
    case 'empty':
      return { bytes: new Uint8Array(0), kind };
    default:
      return { bytes: 'not a binary frame', kind };
  }
}

/**
 * Opens a session over a raw socket; resolves with the socket and its session id, or undefined if refused or if
 * the server does not answer the hello within SESSION_OPEN_TIMEOUT_MS (the socket is then terminated).
 */
function rawSession(target: FuzzTarget): Promise<{ socket: WebSocket; sessionId: number } | undefined> {
  return new Promise((resolve) => {
    const socket = new WebSocket(target.url, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      socket.terminate();
      resolve(undefined);
    }, SESSION_OPEN_TIMEOUT_MS);
    const settle = (opened: { socket: WebSocket; sessionId: number } | undefined) => {
      clearTimeout(timer);
      resolve(opened);
    };
    socket.on('error', () => settle(undefined));
    socket.on('close', () => settle(undefined));
    socket.once('open', () =>
      socket.send(encodeFrame({ type: 'hello', seq: 0 }, encodeJson({ manifestHash: target.manifestHash })), {
        binary: true,
      }),
    );
    socket.once('message', (data: Buffer) =>
      settle({ socket, sessionId: new DataView(data.buffer, data.byteOffset).getUint32(12, true) }),
    );
  });
}

const closed = (socket: WebSocket) =>
  new Promise<void>((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) resolve();
    else socket.once('close', () => resolve());
  });

/**
 * Fuzzes `frames` mutated frames over `sessions` sessions (each: a valid first forward, then mutations until the
 * server closes it, then a new session). Meanwhile a healthy session repeats a fixed request and every result must
 * equal the first one bit for bit. Stops early, with `stoppedEarly` saying why, when the server process dies
 * (`isAlive`), when it refuses MAX_REFUSED_IN_A_ROW sessions in a row (both: serverAlive false), or when the
 * healthy session fails (counted in healthyMismatches).
 */
export async function fuzzServer(
  target: FuzzTarget,
  frames: number,
  seed = 1,
  isAlive: () => boolean = () => true,
): Promise<FuzzReport> {
  const { uniform: random } = seededRandom(seed);
  const healthy = await CloudClient.connect({
    url: target.url,
    manifestHash: target.manifestHash,
    hiddenSize: target.hiddenSize,
    wire: 'fp32',
  });
  const request = Float32Array.from({ length: 3 * target.hiddenSize }, (_, i) => Math.sin(i));
  const reference = (await healthy.forward(request, 3, 0, { allPositions: true })).hidden;
  const report: FuzzReport = {
    framesTried: 0,
    sessions: 0,
    kinds: {},
    serverAlive: true,
    healthyRounds: 0,
    healthyMismatches: 0,
  };
  let fuzzing = true;
  let reported = false;
  let unreachable = false;
  const stop = (reason: string) => {
    if (fuzzing) report.stoppedEarly ??= reason;
    fuzzing = false;
  };
  // The catch is attached here, not when awaited: the healthy session fails the moment the server dies, and the
  // fuzzing loop must hear of it (and the rejection must never go unhandled).
  const checkHealthy = (async () => {
    while (fuzzing) {
      const { hidden } = await healthy.forward(request, 3, 0, { allPositions: true });
      report.healthyRounds++;
      if (hidden.length !== reference.length || hidden.some((v, i) => v !== reference[i])) report.healthyMismatches++;
    }
  })().catch((error: unknown) => {
    if (reported) return;
    report.healthyMismatches++;
    stop(`the healthy session failed: ${(error as Error).message}`);
  });
  try {
    let refusedInARow = 0;
    while (fuzzing && report.framesTried < frames) {
      if (!isAlive()) {
        stop('the server process died');
        break;
      }
      const opened = await rawSession(target);
      if (!opened) {
        if (++refusedInARow >= MAX_REFUSED_IN_A_ROW) {
          unreachable = true;
          stop(`the server refused ${refusedInARow} sessions in a row`);
        }
        continue;
      }
      refusedInARow = 0;
      report.sessions++;
      const { socket, sessionId } = opened;
      let seq = 1;
      socket.send(forwardFrame(sessionId, seq++, 0, 2, target.hiddenSize, random), { binary: true });
      while (fuzzing && socket.readyState === WebSocket.OPEN && report.framesTried < frames) {
        const { bytes, kind } = mutate(
          forwardFrame(sessionId, seq++, 0, 1 + Math.floor(random() * 3), target.hiddenSize, random),
          random,
        );
        report.kinds[kind] = (report.kinds[kind] ?? 0) + 1;
        report.framesTried++;
        socket.send(bytes, { binary: typeof bytes !== 'string' });
        // Let the server answer now and then, so mutations also land on sessions with work in flight.
        if (random() < 0.3) await new Promise((resolve) => setImmediate(resolve));
      }
      if (socket.readyState === WebSocket.OPEN) socket.terminate();
      await closed(socket);
    }
  } finally {
    fuzzing = false;
    let drainTimer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      checkHealthy.then(() => true),
      new Promise<boolean>((resolve) => (drainTimer = setTimeout(() => resolve(false), HEALTHY_DRAIN_MS))),
    ]);
    clearTimeout(drainTimer);
    if (!drained) {
      report.healthyMismatches++;
      report.stoppedEarly ??= `the healthy session's request got no answer within ${HEALTHY_DRAIN_MS} ms`;
    }
    reported = true;
    healthy.close();
    // Stopped early but the server not yet seen dead (its exit may be heard after the healthy session's close):
    // one more session tells whether it still accepts any.
    if (report.stoppedEarly && !unreachable) {
      const probe = await rawSession(target);
      probe?.socket.terminate();
      unreachable = probe === undefined;
    }
    report.serverAlive = isAlive() && !unreachable;
  }
  return report;
}

export interface ProcessReading {
  rssBytes: number;
  openFds: number;
}

export function readProcess(pid: number): ProcessReading {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { rssBytes: rssKb * 1024, openFds: readdirSync(`/proc/${pid}/fd`).length };
}

export interface ChurnReport {
  cycles: number;
  abrupt: number;
  before: ProcessReading;
  after: ProcessReading;
}

/**
 * Connects and disconnects `cycles` times: a third close politely after a hello, a third terminate right after the
 * hello, a third terminate before sending anything. Waits until the server reports no sessions, then reads it.
 */
export async function churn(
  target: FuzzTarget,
  cycles: number,
  sessionsOpen: () => Promise<number>,
): Promise<ChurnReport> {
  const before = readProcess(target.pid);
  let abrupt = 0;
  for (let i = 0; i < cycles; i++) {
    const kind = i % 3;
    if (kind === 2) {
      const socket = new WebSocket(target.url, { perMessageDeflate: false });
      socket.on('error', () => {});
      await new Promise<void>((resolve) => {
        socket.once('open', () => resolve());
        socket.once('close', () => resolve());
      });
      socket.terminate();
      abrupt++;
      await closed(socket);
      continue;
    }
    const opened = await rawSession(target);
    if (!opened) continue;
    if (kind === 0) opened.socket.close(1000);
    else {
      opened.socket.terminate();
      abrupt++;
    }
    await closed(opened.socket);
  }
  const deadline = Date.now() + 10_000;
  while ((await sessionsOpen()) > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  return { cycles, abrupt, before, after: readProcess(target.pid) };
}
