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
  serverAlive: boolean;
  healthyRounds: number;
  healthyMismatches: number;
}

/** The header fields a mutation may hit (offset, width) and payload-level mutations. */
const FIELDS: Array<[string, number, 1 | 2 | 4]> = [
  ['magic', 0, 4],
  ['version', 4, 2],
  ['type', 6, 1],
  ['flags', 7, 1],
  ['dtype', 8, 1],
  ['reserved', 9, 1],
  ['sessionId', 12, 4],
  ['seq', 16, 4],
  ['pastLength', 20, 4],
  ['nTokens', 24, 4],
  ['hiddenSize', 28, 4],
  ['queueMs', 32, 4],
  ['payloadBytes', 48, 4],
];
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

/** Opens a session over a raw socket; resolves with the socket and its session id, or undefined if refused. */
function rawSession(target: FuzzTarget): Promise<{ socket: WebSocket; sessionId: number } | undefined> {
  return new Promise((resolve) => {
    const socket = new WebSocket(target.url, { perMessageDeflate: false });
    socket.on('error', () => resolve(undefined));
    socket.on('close', () => resolve(undefined));
    socket.once('open', () =>
      socket.send(encodeFrame({ type: 'hello', seq: 0 }, encodeJson({ manifestHash: target.manifestHash })), {
        binary: true,
      }),
    );
    socket.once('message', (data: Buffer) =>
      resolve({ socket, sessionId: new DataView(data.buffer, data.byteOffset).getUint32(12, true) }),
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
 * equal the first one bit for bit.
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
  const checkHealthy = (async () => {
    while (fuzzing) {
      const { hidden } = await healthy.forward(request, 3, 0, { allPositions: true });
      report.healthyRounds++;
      if (hidden.length !== reference.length || hidden.some((v, i) => v !== reference[i])) report.healthyMismatches++;
    }
  })();
  try {
    while (report.framesTried < frames) {
      const opened = await rawSession(target);
      if (!opened) continue;
      report.sessions++;
      const { socket, sessionId } = opened;
      let seq = 1;
      socket.send(forwardFrame(sessionId, seq++, 0, 2, target.hiddenSize, random), { binary: true });
      while (socket.readyState === WebSocket.OPEN && report.framesTried < frames) {
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
    await checkHealthy.catch(() => {
      report.healthyMismatches++;
    });
    healthy.close();
    report.serverAlive = isAlive();
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
