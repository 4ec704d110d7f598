/**
 * Measures one-way WebSocket frame delivery over a real (kernel-shaped) link and compares it with the link
 * emulator's prediction (EmulatedDirection.delayFor) for the same sequence of sends. Run by run.sh:
 *
 *   server: node --import tsx scripts/validate-link/measure.ts server --host 10.77.0.2 --port 9777
 *   client: node --import tsx scripts/validate-link/measure.ts client --url ws://10.77.0.2:9777 \
 *             --bandwidth 5e6 --latency 3 --jitter 1 --label wifi --json out.json
 *
 * Sender and receiver are separate processes in separate network namespaces on one machine; both stamp
 * frames with process.hrtime.bigint() (CLOCK_MONOTONIC, shared across namespaces), so receive − send is a true
 * one-way time. Every frame is acknowledged with its receive stamp; the ack's own trip does not enter the figure.
 * Bounded: fixed frame counts, connect retries and a --max-seconds watchdog in both modes.
 */
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import WebSocket, { WebSocketServer } from 'ws';
import { EmulatedDirection } from '../../src/runtime/link.ts';

const args = process.argv.slice(2);
const mode = args[0];
const opt = (name: string, fallback?: string): string => {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1]!;
  if (fallback === undefined) throw new Error(`missing --${name}`);
  return fallback;
};

const maxSeconds = Number(opt('max-seconds', '600'));
setTimeout(() => {
  console.error(`measure ${mode}: --max-seconds ${maxSeconds} reached, stopping`);
  process.exit(3);
}, maxSeconds * 1000).unref();

const now = () => process.hrtime.bigint();

if (mode === 'server') {
  const wss = new WebSocketServer({
    host: opt('host'),
    port: Number(opt('port')),
    perMessageDeflate: false,
    maxPayload: 64 << 20,
  });
  wss.on('listening', () => console.log('server listening'));
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const received = now();
      const ack = Buffer.alloc(16);
      ack.writeUInt32LE(data.readUInt32LE(0), 0);
      ack.writeBigUInt64LE(received, 8);
      ws.send(ack);
    });
    // One client per run: when it leaves, the server is done.
    ws.on('close', () => wss.close(() => process.exit(0)));
  });
} else if (mode === 'client') {
  await client();
} else {
  console.error('usage: measure.ts server|client ...');
  process.exit(2);
}

interface Rec {
  id: number;
  phase: string;
  size: number;
  burst: number;
  sentNs: bigint;
  receivedNs?: bigint;
  measuredMs?: number;
  predictedMs?: number;
}

async function client(): Promise<void> {
  const url = opt('url');
  const label = opt('label');
  const bandwidth = Number(opt('bandwidth'));
  const latencyMs = Number(opt('latency'));
  const jitterMs = Number(opt('jitter'));
  const gapMs = Number(opt('gap', '50'));
  const scale = Number(opt('scale', '1')); // multiplies the frame counts (0.2 for a quick smoke run)

  let ws: WebSocket | undefined;
  for (let attempt = 0; attempt < 50 && !ws; attempt++) {
    try {
      ws = await new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(url, { perMessageDeflate: false });
        socket.once('open', () => resolve(socket));
        socket.once('error', reject);
      });
    } catch {
      await sleep(100);
    }
  }
  if (!ws) throw new Error(`could not connect to ${url}`);
  ws.binaryType = 'nodebuffer';
  const socket = ws;

  const waiting = new Map<number, (receivedNs: bigint) => void>();
  socket.on('message', (data: Buffer) => {
    const id = data.readUInt32LE(0);
    waiting.get(id)?.(data.readBigUInt64LE(8));
    waiting.delete(id);
  });

  const records: Rec[] = [];
  let nextId = 1;
  /** Sends `count` frames of `size` bytes back to back in one tick; resolves when all have been acknowledged. */
  const sendBurst = (phase: string, size: number, count: number, burst: number): Promise<unknown> => {
    const done: Promise<void>[] = [];
    for (let k = 0; k < count; k++) {
      const frame = Buffer.allocUnsafe(size);
      randomFillSync(frame, 16); // incompressible like fp16 hidden states
      const rec: Rec = { id: nextId++, phase, size, burst, sentNs: 0n };
      frame.writeUInt32LE(rec.id, 0);
      frame.writeUInt32LE(0, 4);
      done.push(
        new Promise<void>((resolve) =>
          waiting.set(rec.id, (receivedNs) => {
            rec.receivedNs = receivedNs;
            resolve();
          }),
        ),
      );
      rec.sentNs = now();
      frame.writeBigUInt64LE(rec.sentNs, 8);
      socket.send(frame, { binary: true });
      records.push(rec);
    }
    return Promise.all(done);
  };

  // Realistic hat frame sizes: 1 token (hidden 256 × fp16 + 52-byte header), 64- and 512-token chunks, 2 MiB.
  const token = 256 * 2;
  const sizes = [
    { name: '1 token (564 B)', size: token + 52, isolated: 30, bursts: 5 },
    { name: '64 tok (32 KiB)', size: 64 * token + 52, isolated: 30, bursts: 5 },
    { name: '512 tok (256 KiB)', size: 512 * token + 52, isolated: 20, bursts: 4 },
    { name: '2 MiB', size: 2 * 1024 * 1024, isolated: 10, bursts: 3 },
  ];
  const n = (count: number) => Math.max(2, Math.round(count * scale));

  // Warm-up (a long-lived hat session is past TCP's first round trips): 5 × 32 KiB, left out of the stats.
  for (let i = 0; i < 5; i++) {
    await sendBurst('warmup', 64 * token + 52, 1, 0);
    await sleep(gapMs);
  }
  for (const { size, isolated, bursts } of sizes) {
    for (let i = 0; i < n(isolated); i++) {
      await sendBurst('isolated', size, 1, 0);
      await sleep(gapMs);
    }
    for (let b = 1; b <= n(bursts); b++) {
      await sendBurst('burst10', size, 10, b);
      await sleep(gapMs);
    }
  }
  socket.close();

  // The emulator's prediction for exactly this sequence of sends (same send instants, same sizes, same order).
  const t0 = records[0]!.sentNs;
  const link = new EmulatedDirection({ bandwidth, latencyMs, jitterMs }, Number(opt('seed', '1')));
  for (const rec of records) {
    rec.measuredMs = Number(rec.receivedNs! - rec.sentNs) / 1e6;
    rec.predictedMs = link.delayFor(rec.size, Number(rec.sentNs - t0) / 1e6);
  }

  const rows = [];
  for (const { name, size } of sizes) {
    for (const phase of ['isolated', 'burst10']) {
      const subset = records.filter((r) => r.phase === phase && r.size === size);
      const measured = subset.map((r) => r.measuredMs!);
      const predicted = subset.map((r) => r.predictedMs!);
      const row = {
        link: label,
        pattern: phase === 'isolated' ? 'isolated' : 'burst of 10',
        size: name,
        n: subset.length,
        measuredMean: mean(measured),
        emulatorMean: mean(predicted),
        measuredP90: p90(measured),
        emulatorP90: p90(predicted),
      } as Record<string, unknown>;
      if (phase === 'burst10') {
        // Whole-burst completion: first send to the 10th frame's arrival.
        const byBurst = new Map<number, Rec[]>();
        for (const r of subset) byBurst.set(r.burst, [...(byBurst.get(r.burst) ?? []), r]);
        const last = (f: (r: Rec) => number) =>
          mean(
            [...byBurst.values()].map((rs) =>
              Math.max(...rs.map((r) => Number(r.sentNs - rs[0]!.sentNs) / 1e6 + f(r))),
            ),
          );
        row.measuredBurstDone = last((r) => r.measuredMs!);
        row.emulatorBurstDone = last((r) => r.predictedMs!);
      }
      rows.push(row);
    }
  }
  const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : '–');
  for (const r of rows as Array<Record<string, number & string>>) {
    const done =
      r.measuredBurstDone !== undefined
        ? ` ${fmt(r.measuredBurstDone)} / ${fmt(r.emulatorBurstDone)} ` +
          `(${ratio(r.measuredBurstDone, r.emulatorBurstDone)}) |`
        : ' – |';
    console.log(
      `| ${r.link} | ${r.pattern} | ${r.size} | ${r.n} | ` +
        `${fmt(r.measuredMean)} | ${fmt(r.emulatorMean)} | ${ratio(r.measuredMean, r.emulatorMean)} | ` +
        `${fmt(r.measuredP90)} | ${fmt(r.emulatorP90)} | ${ratio(r.measuredP90, r.emulatorP90)} |${done}`,
    );
  }
  const jsonPath = opt('json', '');
  if (jsonPath) {
    writeFileSync(
      jsonPath,
      JSON.stringify(
        {
          label,
          bandwidth,
          latencyMs,
          jitterMs,
          gapMs,
          rows,
          records: records.map((r) => ({ ...r, sentNs: String(r.sentNs), receivedNs: String(r.receivedNs) })),
        },
        null,
        1,
      ),
    );
  }
  process.exit(0);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}
function p90(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.9 * sorted.length) - 1)]!;
}
