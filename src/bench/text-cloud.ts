/**
 * The cloud-only baseline's server: the full model in one process, prompts arrive as text (or as token ids when
 * the split has no tokenizer) and tokens stream back one message each. Requests from many devices are served
 * one decode step at a time in arrival order, each session keeping its own KV cache, so a long prefill delays
 * the others' next tokens as it would on a real single-model server.
 *
 * Messages are JSON over WebSocket: request `{ "prompt": string | number[], "maxNewTokens": n }`, replies
 * `{ "token": id }` per generated token, or `{ "error": message }`.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { forkOnCores } from './cores.ts';
import { errorData, errorFromData, HatError, type ErrorData } from '../errors.ts';
import { WebSocketServer, type WebSocket } from 'ws';
import { readManifest } from '../runtime/split-dir.ts';
import { splitTokenizerIfAny } from './prompts.ts';
import { ComposedModel, type ComposedState } from '../runtime/composed-model.ts';
import { lastRow } from '../runtime/part-runner.ts';
import { argmax } from '../runtime/sampling.ts';

export interface TextRequest {
  prompt: string | number[];
  /** For a text prompt: whether encoding adds the tokenizer's special tokens (default true). */
  addSpecialTokens?: boolean;
  maxNewTokens: number;
}

interface Job {
  ids: number[];
  state?: ComposedState;
  remaining: number;
  socket: WebSocket;
}

export async function startTextCloud(
  splitDir: string,
  options: { port?: number; threads?: number } = {},
): Promise<{ url: string; close(): Promise<void> }> {
  const model = await ComposedModel.open(splitDir, readManifest(splitDir), { threads: options.threads });
  const tokenizer = splitTokenizerIfAny(splitDir);
  const queue: Job[] = [];
  let running = false;

  const pump = async () => {
    if (running) return;
    running = true;
    try {
      while (queue.length) {
        const job = queue.shift()!;
        if (job.socket.readyState !== job.socket.OPEN) continue;
        if (job.state) model.restore(job.state);
        else model.truncate(0);
        let token: number;
        try {
          token = argmax(lastRow(await model.step(job.ids, { lastOnly: true })));
        } catch (error) {
          // This request fails; the server and everyone else's requests go on.
          job.socket.send(JSON.stringify({ error: errorData(error) }));
          continue;
        }
        job.state = model.snapshot();
        job.socket.send(JSON.stringify({ token }));
        if (--job.remaining > 0) queue.push({ ...job, ids: [token] });
      }
    } finally {
      running = false;
    }
  };

  const server = new WebSocketServer({ host: '127.0.0.1', port: options.port ?? 0, perMessageDeflate: false });
  server.on('connection', (socket) => {
    socket.on('message', (data: Buffer) => {
      try {
        const request = JSON.parse(data.toString('utf8')) as TextRequest;
        const ids =
          typeof request.prompt === 'string'
            ? tokenizer?.encode(request.prompt, request.addSpecialTokens ?? true)
            : request.prompt;
        if (!ids?.length)
          throw new HatError(
            'BAD_OPTION',
            typeof request.prompt === 'string' ? 'this split has no tokenizer: send token ids' : 'empty prompt',
          );
        if (!ids.every((id) => Number.isInteger(id) && id >= 0 && id < model.vocabSize))
          throw new HatError('BAD_OPTION', `a prompt token id is outside the vocabulary (${model.vocabSize} tokens)`);
        queue.push({ ids, remaining: request.maxNewTokens, socket });
        void pump();
      } catch (error) {
        socket.send(JSON.stringify({ error: errorData(error) }));
      }
    });
  });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const address = server.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of server.clients) c.terminate();
        server.close(() => resolve());
      }),
  };
}

/** Starts the cloud-only server as its own process (it stands in for a remote machine) and resolves with its URL. */
export function spawnTextCloud(
  splitDir: string,
  threads?: number,
  cores?: number[],
): Promise<{ url: string; stop(): void }> {
  const entry = fileURLToPath(new URL('./text-cloud-process.ts', import.meta.url));
  const child = fork(entry, [splitDir, ...(threads ? [String(threads)] : [])], {
    ...forkOnCores(cores),
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (message: { type: string; url?: string; error?: ErrorData }) => {
      if (message.type === 'listening')
        resolve({ url: message.url!, stop: () => (child.connected ? child.disconnect() : undefined) });
      else reject(errorFromData(message.error!, 'RUNTIME', 'the cloud-only server failed to start: '));
    });
    child.once('exit', (code) =>
      reject(new HatError('RUNTIME', `the cloud-only server exited (code ${code}) before listening`)),
    );
  });
}
