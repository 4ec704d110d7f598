/**
 * A middle-part worker thread: one onnxruntime session of middle.onnx, the KV caches of its sessions, and a
 * message loop. Each task truncates the session's cache to the requested past length (rollback), runs, and
 * returns the middle output of every position or only the last.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isHatError } from '../../errors.ts';
import { createSession } from '../session.ts';
import { PartRunner, type KvState } from '../part-runner.ts';
import { partIO, readManifest } from '../split-dir.ts';
import type { WorkerReply, WorkerTask } from './worker-messages.ts';
import { resolve } from 'node:path';

const { splitDir, threads, maxContext } = workerData as { splitDir: string; threads: number; maxContext: number };
const port = parentPort!;
const reply = (message: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);

async function main(): Promise<void> {
  const manifest = readManifest(splitDir);
  const session = await createSession(resolve(splitDir, manifest.parts.middle.file), { threads }, 'middle part');
  // One runner; each device session's cache is swapped in and out as a KvState held only here (so rollback compacts in place).
  const runner = PartRunner.fromSession(session, partIO(manifest, 'middle'));
  const empty = runner.snapshot();
  const caches = new Map<number, KvState>();
  // A drop can arrive while that session's run is awaited; its cache must not be stored afterwards.
  let runningSession: number | undefined;
  let droppedWhileRunning = false;

  port.on('message', async (task: WorkerTask) => {
    if (task.kind === 'drop') {
      caches.delete(task.sessionId);
      if (task.sessionId === runningSession) droppedWhileRunning = true;
      return;
    }
    runningSession = task.sessionId;
    droppedWhileRunning = false;
    try {
      runner.restore(caches.get(task.sessionId) ?? empty);
      if (task.pastLength > runner.length) {
        throw new Error(`past length ${task.pastLength} is beyond the session's cache of ${runner.length} positions`);
      }
      if (task.pastLength + task.nTokens > maxContext) {
        throw new Error(`the session would exceed the server's context limit of ${maxContext} positions`);
      }
      runner.truncate(task.pastLength);
      const started = performance.now();
      const output = await runner.step({ hidden: task.hidden }, task.nTokens);
      const computeMs = performance.now() - started;
      if (!droppedWhileRunning) caches.set(task.sessionId, runner.snapshot({ exclusive: true }));
      const rows = task.allPositions ? output.rows : 1;
      const hidden = output.data.slice((output.rows - rows) * output.cols);
      reply({ kind: 'result', sessionId: task.sessionId, hidden, rows, computeMs }, [hidden.buffer as ArrayBuffer]);
    } catch (error) {
      reply({ kind: 'run-failed', sessionId: task.sessionId, message: isHatError(error) ? error.message : (error as Error).message });
    } finally {
      runningSession = undefined;
    }
  });
  reply({ kind: 'ready' });
}

main().catch((error) => reply({ kind: 'load-failed', code: isHatError(error) ? error.code : 'RUNTIME', message: (error as Error).message }));
