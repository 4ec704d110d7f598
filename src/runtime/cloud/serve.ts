/** serve-cloud's core: open the split, start the middle-part workers and the server. */
import { existsSync } from 'node:fs';
import { freemem } from 'node:os';
import { join, resolve } from 'node:path';
import { HatError } from '../../errors.ts';
import { loadModel } from '../../onnx/model-io.ts';
import { decideBatching, inPlaceFor } from '../../split/batching.ts';
import { manifestHash, readManifest } from '../split-dir.ts';
import { configContext, configSlidingWindow } from '../model-config.ts';
import type { BatchingDecision, SplitManifest } from '../../split/manifest.ts';
import { CloudServer } from './server.ts';
import { MALLOC_TUNABLES, missingMallocTunables } from './malloc-tunables.ts';
import { CloudMetrics, kvBytesPerPosition } from './cloud-metrics.ts';
import { WorkerPool } from './worker-pool.ts';
import type { Logger } from './logger.ts';
import type { LinkSpec } from '../link.ts';
import type { RowsAdviceWhen } from './rows-advice.ts';

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
  /** Largest cache per session; default the split's trained context (config.json), else 8,192. */
  maxContext?: number;
  /** KV-cache bytes all sessions may hold at their largest; sessions are admitted against it. Default ½ free memory. */
  kvMemoryBytes?: number;
  /** Hardening limits (server.ts defaults when omitted). */
  maxConnections?: number;
  handshakeTimeoutMs?: number;
  maxInflightPerSession?: number;
  keepaliveMs?: number;
  /** Sessions per middle run (1: batching off); default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Padded rows per middle run; default from the intra-op threads (worker-pool.ts). */
  maxBatchTokens?: number;
  /** Consult each worker's fitted run cost before joining a request to a batch (run-cost.ts); default off. */
  costRule?: boolean;
  /** When results advise a verification's rows (rows-advice.ts): 'saturated', 'always', 'off' (default). */
  rowsAdvice?: RowsAdviceWhen;
  /** Sessions a gathered batch of verifications must hold (worker-pool.ts); default 2. */
  minBatch?: number;
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
    throw new HatError(
      'BAD_MANIFEST',
      `${options.splitDir} has no ${manifest.parts.middle.file}`,
      'serve-cloud needs the full split directory, not a device bundle',
    );
  }
  options.logger.log('loading', { splitDir: options.splitDir, workers: options.workers });
  const limits = sessionLimits(options, manifest);
  options.logger.log('limits', limits);
  const missing = missingMallocTunables();
  if (missing.length > 0) {
    options.logger.log('hint', {
      message:
        `started without ${missing.join(', ')}: runs whose pasts grow may fault in fresh memory every round ` +
        '(README: "serve-cloud\'s memory settings")',
      set: Object.fromEntries(missing.map((name) => [name, MALLOC_TUNABLES[name]])),
    });
  }
  // Splits written before the manifest recorded it: the decision is a function of middle.onnx, which is right here
  // (its graph only: hat splits keep weights in external data), so older splits batch without being split again.
  const batching = await batchingOf(options.splitDir, manifest);
  const { inPlace } = batching;
  const pool = await WorkerPool.start({
    splitDir: resolve(options.splitDir),
    workers: options.workers,
    threadsPerWorker: options.threadsPerWorker,
    maxContext: limits.maxContext,
    kvPositions:
      limits.kvBytesPerSession > 0 ? (limits.kvMemoryBytes / limits.kvBytesPerSession) * limits.maxContext : undefined,
    batching: batching.mode,
    inPlace,
    maxBatch: options.maxBatch,
    maxBatchTokens: options.maxBatchTokens,
    costRule: options.costRule,
    rowsAdvice: options.rowsAdvice,
    minBatch: options.minBatch,
    logger: options.logger,
  });
  options.logger.log('batching', {
    mode: batching.mode,
    reason: batching.reason,
    inPlace,
    decidedBy: manifest.batching ? 'manifest' : 'middle.onnx (the split predates the field)',
    maxBatch: pool.limits.maxBatch,
    maxBatchTokens: pool.limits.maxBatchTokens,
    mergedRows: pool.limits.maxBatch > 1 ? pool.limits.mergedRows : undefined,
    minBatch: pool.limits.maxBatch > 1 ? pool.limits.minBatch : undefined,
    costRule: pool.costRule ? 'on' : 'off',
    rowsAdvice: pool.limits.maxBatch > 1 ? pool.rowsAdvice : undefined,
    // How the default budget was found: each probe run's rows and ms, and the knee taken (batch-knee.ts).
    ...(pool.knee ? { knee: pool.knee } : {}),
  });
  let server: CloudServer | undefined;
  const metrics = new CloudMetrics({
    kvBytesPerPosition: kvBytesPerPosition(manifest),
    sessions: () => server?.sessionCount ?? 0,
    pending: () => pool.pending,
    costErrors: () => pool.costErrors,
  });
  pool.onRun = (run) => metrics.observeRun(run);
  server = new CloudServer({
    host: options.host,
    port: options.port,
    token: options.token,
    maxSessions: limits.maxSessions,
    maxContext: limits.maxContext,
    idleTimeoutMs: options.idleTimeoutMs,
    maxConnections: options.maxConnections,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    maxInflightPerSession: options.maxInflightPerSession,
    keepaliveMs: options.keepaliveMs,
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

const FALLBACK_CONTEXT = 8192;

/**
 * How long a session may grow and how many fit: the context comes from the model (a cache longer than it was
 * trained for is wasted memory); sessions are admitted so that all of them at full context fit the KV budget.
 */
export function sessionLimits(
  options: Pick<ServeOptions, 'splitDir' | 'maxContext' | 'kvMemoryBytes' | 'maxSessions'>,
  manifest: SplitManifest,
) {
  const trained = configContext(options.splitDir);
  const maxContext = options.maxContext ?? trained ?? FALLBACK_CONTEXT;
  const kvMemoryBytes = options.kvMemoryBytes ?? Math.floor(freemem() / 2);
  const perSession = maxContext * kvBytesPerPosition(manifest);
  const byMemory = perSession > 0 ? Math.max(1, Math.floor(kvMemoryBytes / perSession)) : options.maxSessions;
  return {
    maxContext,
    contextFrom: options.maxContext ? '--max-context' : trained ? 'config.json' : 'fallback',
    kvMemoryBytes,
    kvBytesPerSession: perSession,
    maxSessions: Math.min(options.maxSessions, byMemory),
    sessionsLimitedBy: byMemory < options.maxSessions ? '--kv-memory' : '--max-sessions',
  };
}

/**
 * The sliding window of a split's model, as `hat split` finds it: the one its config.json declares, or the one its
 * mask repair rebuilt (recorded in the manifest's prelude).
 */
function splitWindow(splitDir: string, manifest: SplitManifest): number | undefined {
  const repaired = /(\d+)-position sliding window/.exec(String(manifest.prelude.maskRepair ?? ''));
  return configSlidingWindow(splitDir) ?? (repaired ? Number(repaired[1]) : undefined);
}

/**
 * How serve-cloud batches a split: the manifest's `batching`, or for a split written before that field (or before
 * its `inPlace`), the decision `hat split` now makes, from `middle.onnx` and the model's sliding window.
 */
export async function batchingOf(splitDir: string, manifest: SplitManifest): Promise<Required<BatchingDecision>> {
  const window = splitWindow(splitDir, manifest);
  const middle = join(splitDir, manifest.parts.middle.file);
  const batching =
    manifest.batching ?? decideBatching((await loadModel(middle)).model.graph!, manifest.kv.middle, window);
  return { ...batching, inPlace: batching.inPlace ?? inPlaceFor(batching.mode, window) };
}
