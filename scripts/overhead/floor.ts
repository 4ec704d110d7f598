/**
 * The platform's floor under serve-cloud's added time: the least any WebSocket server on this machine adds to a
 * round whose compute takes `computeMs`, measured with stand-ins that do nothing but the unavoidable — a server
 * process that (a) busy-waits `computeMs` on its event loop and echoes the frame, or (b) hands the frame to a worker
 * thread that busy-waits and hands it back (what "inference off the event loop" costs at least). No model, no codec,
 * no scheduler: round trip less `computeMs`, medians.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { WebSocket, WebSocketServer } from 'ws';

const busyWait = (ms: number) => {
  const t = performance.now();
  while (performance.now() - t < ms) {
    /* the stand-in's compute */
  }
};
const self = fileURLToPath(import.meta.url);

// Plain JavaScript, evaluated: a worker thread does not inherit the parent's tsx loader.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  const t = performance.now();
  while (performance.now() - t < m.ms) {}
  parentPort.postMessage(m.bytes, [m.bytes.buffer]);
});`;

if (process.argv[2] === 'floor-server') {
  const [ms, mode] = [Number(process.argv[3]), process.argv[4]];
  const worker = mode === 'worker' ? new Worker(WORKER_SOURCE, { eval: true }) : undefined;
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  server.on('listening', () => process.send!((server.address() as { port: number }).port));
  server.on('connection', (socket) =>
    socket.on('message', (data: Buffer) => {
      if (!worker) {
        busyWait(ms);
        socket.send(data, { binary: true });
        return;
      }
      const bytes = new Uint8Array(data);
      worker.once('message', (reply: Uint8Array) => socket.send(reply, { binary: true }));
      worker.postMessage({ bytes, ms }, [bytes.buffer]);
    }),
  );
}

/** Median ms a stand-in server adds per round: on its event loop, and with one worker-thread hop. */
export async function measureFloor(
  computeMs: number,
  frameBytes: number,
  rounds: number,
): Promise<{ eventLoop: number; workerHop: number }> {
  const result = { eventLoop: 0, workerHop: 0 };
  for (const mode of ['event-loop', 'worker'] as const) {
    const child = fork(self, ['floor-server', String(computeMs), mode], { execArgv: ['--import', 'tsx'] });
    try {
      const port = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
      const socket = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
      await new Promise((resolve) => socket.once('open', resolve));
      const frame = Buffer.alloc(frameBytes);
      const added: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const t = performance.now();
        await new Promise((resolve) => {
          socket.once('message', resolve);
          socket.send(frame);
        });
        added.push(performance.now() - t - computeMs);
        await new Promise((resolve) => setTimeout(resolve, 1)); // rounds are spaced as the device's are
      }
      socket.close();
      added.sort((a, b) => a - b);
      result[mode === 'worker' ? 'workerHop' : 'eventLoop'] = added[Math.floor(added.length / 2)];
    } finally {
      child.kill();
    }
  }
  return result;
}
