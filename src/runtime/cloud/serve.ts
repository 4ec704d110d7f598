/** serve-cloud's core: open the split, start the middle-part workers and the server. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { HatError } from '../../errors.ts';
import { loadModel } from '../../onnx/model-io.ts';
import { decideBatching } from '../../split/batching.ts';
import { manifestHash, readManifest } from '../split-dir.ts';
import { CloudServer } from './server.ts';
import { CloudMetrics, kvBytesPerPosition } from './cloud-metrics.ts';
import { WorkerPool } from './worker-pool.ts';
import type { Logger } from './logger.ts';
import type { LinkSpec } from '../link.ts';

export interface ServeOptions {
  splitDir: string;
  host: string;
  port: number;
  token?: string;
  workers: number;
  /** onnxruntime intra-op threads per worker; default: available cores / workers. */
  threadsPerWorker?: number;
  maxSessions: number;
  idleTimeoutMs: number;
  maxTokensPerFrame: number;
  maxContext: number;
  /** Sessions per middle run (1: batching off); default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Padded rows per middle run; default from the intra-op threads (worker-pool.ts). */
  maxBatchTokens?: number;
  logger: Logger;
  link?: LinkSpec;
}

export interface StartedCloud {
  server: CloudServer;
  /** The middle workers, for their counters (WorkerPool.stats). */
  pool: WorkerPool;
  /** What /metrics serves. */
  metrics: CloudMetrics;
  host: string;
  port: number;
}

export async function startCloud(options: ServeOptions): Promise<StartedCloud> {
  const manifest = readManifest(options.splitDir);
  const middle = resolve(options.splitDir, manifest.parts.middle.file);
  if (!existsSync(middle)) {
    throw new HatError('BAD_MANIFEST', `${options.splitDir} has no ${manifest.parts.middle.file}`, 'serve-cloud needs the full split directory, not a device bundle');
  }
  options.logger.log('loading', { splitDir: options.splitDir, workers: options.workers });
  // Splits written before the manifest recorded it: the decision is a function of middle.onnx, which is right here
  // (its graph only: hat splits keep weights in external data), so older splits batch without being split again.
  const batching = manifest.batching ?? decideBatching((await loadModel(middle)).model.graph!, manifest.kv.middle);
  const pool = await WorkerPool.start({
    splitDir: resolve(options.splitDir), workers: options.workers, threadsPerWorker: options.threadsPerWorker,
    maxContext: options.maxContext, batching: batching.mode, maxBatch: options.maxBatch,
    maxBatchTokens: options.maxBatchTokens, logger: options.logger,
  });
  options.logger.log('batching', {
    mode: batching.mode, reason: batching.reason,
    decidedBy: manifest.batching ? 'manifest' : 'middle.onnx (the split predates the field)',
    maxBatch: pool.limits.maxBatch, maxBatchTokens: pool.limits.maxBatchTokens,
  });
  let server: CloudServer | undefined;
  const metrics = new CloudMetrics({
    kvBytesPerPosition: kvBytesPerPosition(manifest),
    sessions: () => server?.sessionCount ?? 0,
    pending: () => pool.pending,
  });
  pool.onRun = (run) => metrics.observeRun(run);
  server = new CloudServer({
    host: options.host,
    port: options.port,
    token: options.token,
    maxSessions: options.maxSessions,
    idleTimeoutMs: options.idleTimeoutMs,
    maxTokensPerFrame: options.maxTokensPerFrame,
    manifestHash: manifestHash(manifest),
    hiddenSize: manifest.hidden.size,
    executor: pool,
    logger: options.logger,
    link: options.link,
    metrics,
  });
  try {
    const address = await server.start();
    return { server, pool, metrics, ...address };
  } catch (error) {
    await pool.close();
    throw error;
  }
}
