import type { Command } from 'commander';
import { firstSignal, intOption, parseOptions, readToken, z } from './common.ts';
import { startCloud } from '../runtime/cloud/serve.ts';
import { jsonLineLogger } from '../runtime/cloud/logger.ts';
import { DEFAULT_MAX_BATCH, DEFAULT_MIN_BATCH, DEFAULT_TOKENS_PER_THREAD } from '../runtime/cloud/worker-pool.ts';
import { DEFAULT_ROWS_ADVICE, ROWS_ADVICE_WHEN } from '../runtime/cloud/rows-advice.ts';
import { describeLink, parseLinkSpec } from '../runtime/link.ts';

const schema = z
  .object({
    port: intOption(0, 65535),
    host: z.string().min(1),
    token: z.string().min(1).optional(),
    tokenFile: z.string().optional(),
    workers: intOption(1, 64),
    threads: intOption(1, 256).optional(),
    maxSessions: intOption(1, 100000),
    idleTimeout: intOption(1),
    maxTokensPerFrame: intOption(1, 65536),
    maxContext: intOption(1).optional(),
    kvMemory: intOption(1).optional(),
    drainTimeout: intOption(0, 3600),
    maxConnections: intOption(1, 1_000_000).optional(),
    handshakeTimeout: intOption(1, 600),
    maxInflight: intOption(1, 1024),
    maxBatch: intOption(1, 1024),
    maxBatchTokens: intOption(1).optional(),
    costRule: z.enum(['on', 'off']),
    rowsAdvice: z.enum(ROWS_ADVICE_WHEN),
    minBatch: intOption(2, 1024),
    link: z.string().optional(),
  })
  .refine((o) => o.maxBatch === 1 || o.minBatch <= o.maxBatch, {
    message: 'must not exceed --max-batch (a verification batch could never form)',
    path: ['minBatch'],
  });

export function registerServeCloud(program: Command): void {
  program
    .command('serve-cloud')
    .description('serve the middle part of a split to many devices over WebSocket (hidden states only)')
    .argument('<split-dir>', 'directory written by `hat split`')
    .option('--port <n>', 'TCP port (0 picks a free one)', '8765')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--token-file <path>', 'file holding the shared secret devices must present (or set HAT_TOKEN)')
    .option(
      '--token <secret>',
      'the shared secret itself (visible to other users in ps: prefer HAT_TOKEN or --token-file)',
    )
    .option('--workers <n>', 'worker threads, each with its own middle-part session', '1')
    .option('--threads <n>', 'onnxruntime intra-op threads per worker (default: available cores / workers)')
    .option('--max-sessions <n>', 'concurrent device sessions', '64')
    .option('--idle-timeout <seconds>', 'close sessions idle this long', '300')
    .option('--max-tokens-per-frame <n>', 'largest chunk or verification a frame may carry', '4096')
    .option(
      '--max-context <n>',
      "largest KV length a session may reach (default: the model's trained context from config.json)",
    )
    .option(
      '--kv-memory <MB>',
      'KV-cache memory all sessions may hold at full context; ' +
        'sessions are admitted against it (default: half the free memory)',
    )
    .option(
      '--drain-timeout <seconds>',
      'on SIGTERM/SIGINT: how long in-flight rounds may finish before the process exits',
      '30',
    )
    .option(
      '--max-connections <n>',
      'open TCP connections beyond this are refused at once (default: --max-sessions + 64)',
    )
    .option('--handshake-timeout <seconds>', 'a connection must upgrade and send its hello within this', '5')
    .option('--max-inflight <n>', 'requests one session may have queued or running before its socket is paused', '4')
    .option(
      '--max-batch <n>',
      'device sessions per middle run when the split can batch (1: off)',
      String(DEFAULT_MAX_BATCH),
    )
    .option(
      '--max-batch-tokens <n>',
      'padded rows per middle run: sessions × longest request (default: the knee measured on the middle part at ' +
        'start — where more rows stop getting cheaper per row; ' +
        `${DEFAULT_TOKENS_PER_THREAD} × threads per worker if that fails)`,
    )
    .option(
      '--min-batch <n>',
      'sessions a batch of verifications must hold when it gathers their caches; fewer run one by one (2: any)',
      String(DEFAULT_MIN_BATCH),
    )
    .option(
      '--cost-rule <on|off>',
      'batch a request only where the fitted run cost says it pays (off: batch whatever fits the limits)',
      'off',
    )
    .option(
      '--rows-advice <saturated|always|off>',
      "when results advise a verification's rows (a shared batch budget): only while a worker is saturated, " +
        'at any load, or never',
      DEFAULT_ROWS_ADVICE,
    )
    .option(
      '--link <profile|spec>',
      'EMULATED link applied to every session here (use it on one side only): ' +
        'wifi, 4g, lan, or up=5MB,down=10MB,rtt=6,jitter=1',
    )
    .action(async (splitDir: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const logger = jsonLineLogger();
      const link = options.link ? parseLinkSpec(options.link) : undefined;
      if (link) logger.log('link-emulation', { link: describeLink(link) });
      const { server, host, port } = await startCloud({
        splitDir,
        host: options.host,
        port: options.port,
        token: readToken(options),
        workers: options.workers,
        threadsPerWorker: options.threads,
        maxSessions: options.maxSessions,
        idleTimeoutMs: options.idleTimeout * 1000,
        maxTokensPerFrame: options.maxTokensPerFrame,
        maxContext: options.maxContext,
        kvMemoryBytes: options.kvMemory === undefined ? undefined : options.kvMemory * 2 ** 20,
        maxConnections: options.maxConnections,
        handshakeTimeoutMs: options.handshakeTimeout * 1000,
        maxInflightPerSession: options.maxInflight,
        maxBatch: options.maxBatch,
        maxBatchTokens: options.maxBatchTokens,
        costRule: options.costRule === 'on',
        rowsAdvice: options.rowsAdvice,
        minBatch: options.minBatch,
        logger,
        link,
      });
      const signal = firstSignal();
      // The one line tools and tests wait for: where to connect.
      process.stdout.write(`serve-cloud listening on ws://${host}:${port}\n`);
      logger.log('signal', { signal: await signal });
      await server.drain(options.drainTimeout * 1000);
    });
}
