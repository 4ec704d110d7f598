/**
 * Starts `hat serve-cloud` as a separate process (the real server, as a device would meet it) and resolves
 * with its URL once it listens. Used by `hat demo`, the benchmarks and end-to-end tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ERROR_TABLE, HatError, type ErrorCode } from '../errors.ts';
import { withMallocTunables } from '../runtime/cloud/malloc-tunables.ts';

export const HAT_BIN = fileURLToPath(new URL('../../bin/hat', import.meta.url));

export interface SpawnedCloud {
  url: string;
  process: ChildProcess;
  /** Structured log lines the server wrote to stderr. */
  log: string[];
  stop(): Promise<void>;
}

export interface SpawnCloudOptions {
  timeoutMs?: number;
  /** Wraps the command (e.g. taskset -c 0): how the bench pins the cloud to its own cores. */
  wrap?: (command: string, args: string[]) => { command: string; args: string[] };
  /** The process's environment (default: this one's). */
  env?: NodeJS.ProcessEnv;
}

export interface SpawnedHat {
  /** The first match of `ready` in the process's stdout. */
  match: RegExpExecArray;
  process: ChildProcess;
  /** Lines the process wrote to stderr. */
  log: string[];
  stop(): Promise<void>;
}

/**
 * Runs `hat <args>` and resolves once its stdout matches `ready` (the line a server prints when it listens); rejects
 * if it exits first (with the code of its own error line, exitedError) or with NETWORK if it does not get there within
 * `timeoutMs`. `what` names it in those errors.
 */
export function spawnHat(
  args: string[],
  ready: RegExp,
  what: string,
  options: SpawnCloudOptions = {},
): Promise<SpawnedHat> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const wrap = options.wrap ?? ((command, args) => ({ command, args }));
  const { command, args: wrapped } = wrap(process.execPath, [HAT_BIN, ...args]);
  const child = spawn(command, wrapped, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
  const log: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => log.push(...chunk.split('\n').filter(Boolean)));
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    });
  return new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => {
      void stop();
      reject(
        new HatError(
          'NETWORK',
          `${what} did not start within ${timeoutMs} ms`,
          `its log: ${log.slice(-3).join(' | ')}`,
        ),
      );
    }, timeoutMs);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const match = ready.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve({ match, process: child, log, stop });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(exitedError(what, code, log));
    });
  });
}

/**
 * Why a hat process ended before it listened. Its own `error[CODE]: message — hint` line keeps its code (a
 * serve-cloud refusing its options is BAD_OPTION, not a network failure); without one it is NETWORK.
 */
function exitedError(what: string, code: number | null, log: readonly string[]): HatError {
  const exited = `${what} exited with code ${code} before listening`;
  const line = log.filter((l) => l.startsWith('error')).pop();
  const own = line && /^error\[([A-Z_]+)\]: (.*)$/.exec(line);
  if (own && own[1] in ERROR_TABLE) {
    const at = own[2].lastIndexOf(' — ');
    const [message, hint] = at < 0 ? [own[2], undefined] : [own[2].slice(0, at), own[2].slice(at + 3)];
    return new HatError(own[1] as ErrorCode, `${exited}: ${message}`, hint);
  }
  return new HatError('NETWORK', exited, line ?? log.slice(-1)[0] ?? 'see its log');
}

export async function spawnCloud(
  splitDir: string,
  extraArgs: string[] = [],
  options: SpawnCloudOptions = {},
): Promise<SpawnedCloud> {
  // serve-cloud's malloc settings (malloc-tunables.ts) are set here, as a deployment sets them.
  const started = await spawnHat(
    ['serve-cloud', splitDir, '--port', '0', ...extraArgs],
    /listening on (ws:\/\/\S+)/,
    'serve-cloud',
    { ...options, env: withMallocTunables(options.env) },
  );
  return { url: started.match[1], process: started.process, log: started.log, stop: started.stop };
}
