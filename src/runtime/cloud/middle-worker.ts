/**
 * A middle-part worker thread: one onnxruntime session of middle.onnx, the KV caches of its sessions (held by a
 * MiddleEngine), and a message loop. Each task is a batch the pool's scheduler picked; every request in it truncates
 * its session's cache to the requested past length (rollback), runs, and gets the middle output of every position
 * or only the last.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { resolve } from 'node:path';
import { codeOf, errorData } from '../../errors.ts';
import { createSession } from '../session.ts';
import { partIO, readManifest } from '../split-dir.ts';
import { MiddleEngine } from './middle-engine.ts';
import type { PastLayout } from './padded-batch.ts';
import type { WorkerReply, WorkerTask } from './worker-messages.ts';
import { probeTimes } from './batch-knee.ts';

const { splitDir, threads, maxContext, layout, inPlace, maxHeldPositions } = workerData as {
  splitDir: string;
  threads: number;
  maxContext: number;
  maxHeldPositions?: number;
  layout?: PastLayout;
  inPlace: boolean;
};
const port = parentPort!;
const reply = (message: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);
const messageOf = (error: unknown) => (error as Error).message;

async function main(): Promise<void> {
  const manifest = readManifest(splitDir);
  const session = await createSession(resolve(splitDir, manifest.parts.middle.file), { threads }, 'middle part');
  const engine = new MiddleEngine(session, partIO(manifest, 'middle'), {
    maxContext,
    layout,
    inPlace,
    maxHeldPositions,
  });

  // A drop arrives while a batch is awaited too: the engine then does not keep that session's new cache.
  port.on('message', async (task: WorkerTask) => {
    if (task.kind === 'drop') {
      engine.drop(task.sessionId);
      return;
    }
    if (task.kind === 'probe') {
      try {
        reply({ kind: 'probed', times: await probeTimes(task.rows, (n) => engine.timeRows(n, manifest.hidden.size)) });
      } catch (error) {
        reply({ kind: 'probe-failed', message: messageOf(error) });
      }
      return;
    }
    try {
      const ran = await engine.run(task.requests);
      const buffers = ran.results.flatMap((r) => (r.ok ? [r.hidden.buffer as ArrayBuffer] : []));
      reply({ kind: 'ran', ...ran }, buffers);
    } catch (error) {
      const message = messageOf(error);
      const code = codeOf(error, 'RUN_FAILED');
      const results = task.requests.map((r) => ({ sessionId: r.sessionId, ok: false as const, code, message }));
      reply({ kind: 'ran', results, computeMs: 0, paddedRows: 0, copyMs: 0, inPlace: false });
    }
  });
  reply({ kind: 'ready' });
}

main().catch((error) => {
  reply({ kind: 'load-failed', ...errorData(error) });
});
