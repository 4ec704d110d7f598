import type { Command } from 'commander';
import { deviceMetricsTable } from './metrics-table.ts';
import {
  firstSignal,
  intOption,
  numberOption,
  parseOptions,
  PROMPT_HELP,
  promptInput,
  promptOptions,
  readToken,
  z,
} from './common.ts';
import { runDevice } from '../runtime/device/run-device.ts';
import { describeLink, parseLinkSpec } from '../runtime/link.ts';
import { terminalReporter } from '../reporter.ts';
import { describeResume } from '../runtime/device/resuming-verifier.ts';
import { HatError } from '../errors.ts';
import { parseServeAddress, serveDevice } from '../api/serve-device.ts';

const schema = z.object({
  cloud: z.string().regex(/^wss?:\/\//, 'must be a ws:// or wss:// URL'),
  ...promptOptions,
  maxNewTokens: intOption(1, 100000),
  temperature: numberOption(0, 100),
  topP: numberOption(0.000001, 1),
  seed: intOption(0),
  draftThreshold: z.union([z.literal('auto'), z.coerce.number().min(0).max(1)]),
  maxDraft: intOption(1, 64),
  draft: z.boolean(),
  parallelDrafting: z.boolean(),
  parallelBranches: intOption(1, 4),
  chunk: z.union([z.literal('auto'), z.literal('off'), intOption(1)]),
  wire: z.enum(['fp32', 'fp16', 'int8']),
  link: z.string().optional(),
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  fallback: z.enum(['none', 'local']),
  reconnect: intOption(0, 100),
  threads: intOption(1, 256).optional(),
  json: z.boolean().optional(),
  serve: z.string().optional(),
  maxQueue: intOption(0, 100000),
  modelName: z.string().min(1).optional(),
  record: z.string().min(1).optional(),
});

export function registerRunDevice(program: Command): void {
  program
    .command('run-device')
    .description('generate on the device: input/output parts + draft adapter here, middle part in the cloud')
    .argument('<split-dir>', 'split directory or device bundle (input, output, adapter, manifest, tokenizer)')
    .requiredOption('--cloud <url>', 'serve-cloud address, e.g. ws://127.0.0.1:8765')
    .option('--prompt <text>', PROMPT_HELP.prompt)
    .option('--prompt-ids <ids>', PROMPT_HELP.promptIds)
    .option('--max-new-tokens <n>', 'tokens to generate', '64')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--top-p <p>', 'nucleus sampling', '1')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--draft-threshold <auto|η>', 'stop drafting below this top-1 probability; auto adapts it online', 'auto')
    .option('--max-draft <n>', 'most drafts per verification round', '6')
    .option('--no-draft', 'no speculative decoding: one cloud round trip per token (U-shape)')
    .option('--no-parallel-drafting', 'do not draft ahead while a verification is in flight')
    .option(
      '--parallel-branches <k>',
      "candidates for the next token to draft ahead from (HAT's top-k; 1 measured as fast as 2 with less device work)",
      '1',
    )
    .option('--chunk <auto|off|n>', 'prompt chunk size', 'auto')
    .option('--wire <dtype>', 'hidden-state dtype on the wire: fp32, fp16, int8', 'fp16')
    .option('--link <profile|spec>', 'EMULATED link: wifi, 4g, lan, none, or up=5MB,down=10MB,rtt=6,jitter=1')
    .option('--token-file <path>', "file holding the server's shared secret (or set HAT_TOKEN)")
    .option('--token <secret>', 'the secret itself (visible in ps: prefer HAT_TOKEN or --token-file)')
    .option(
      '--reconnect <n>',
      'when the cloud connection drops: new sessions to try (any replica), each replaying what was committed; 0: off',
      '3',
    )
    .option(
      '--fallback <mode>',
      'if every reconnect fails: none (stop, keep the text) or local (continue with the small model)',
      'none',
    )
    .option('--threads <n>', 'onnxruntime intra-op threads')
    .option('--json', 'print one JSON object instead of streaming text')
    .option('--serve <[host:]port>', 'keep the parts loaded and serve an OpenAI-compatible API (host: 127.0.0.1)')
    .option('--max-queue <n>', 'with --serve: requests that may wait while one generates (more get 429)', '16')
    .option('--model-name <id>', "with --serve: the model id clients use (default: the bundle folder's name)")
    .option(
      '--record <file>',
      "save the session's frames as sent, the device's timing and the results (JSON) for " +
        'replay by `hat bench --fleet --recordings`',
    )
    .action(async (splitDir: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const reporter = terminalReporter({ quiet: options.json });
      const link = options.link ? parseLinkSpec(options.link) : undefined;
      if (link) reporter.info(describeLink(link));
      if (options.serve !== undefined) {
        if (options.prompt !== undefined || options.promptIds !== undefined) {
          throw new HatError('BAD_OPTION', '--serve takes prompts over HTTP, not --prompt', 'drop --prompt');
        }
        if (options.record)
          throw new HatError('BAD_OPTION', '--record records one --prompt session, not --serve', 'drop one');
        const { device, server } = await serveDevice(
          splitDir,
          {
            cloud: options.cloud,
            token: readToken(options),
            wire: options.wire,
            link,
            threads: options.threads,
            speculative: options.draft,
            draftThreshold: options.draftThreshold,
            maxDraft: options.maxDraft,
            parallelDrafting: options.parallelDrafting,
            parallelBranches: options.parallelBranches,
            chunk: options.chunk,
            reconnects: options.reconnect,
            fallbackLocal: options.fallback === 'local',
            maxQueue: options.maxQueue,
            modelId: options.modelName,
          },
          parseServeAddress(options.serve),
          reporter,
        );
        const signal = firstSignal();
        // The one line tools and tests wait for: where to point an OpenAI client.
        process.stdout.write(`hat device serving the OpenAI API on ${server.url} (model ${device.modelId})\n`);
        await signal;
        await server.close();
        await device.close();
        return;
      }
      const result = await runDevice({
        splitDir,
        cloud: options.cloud,
        prompt: promptInput(options),
        maxNewTokens: options.maxNewTokens,
        temperature: options.temperature,
        topP: options.topP,
        seed: options.seed,
        draftThreshold: options.draftThreshold,
        maxDraft: options.maxDraft,
        speculative: options.draft,
        parallelDrafting: options.parallelDrafting,
        parallelBranches: options.parallelBranches,
        chunk: options.chunk,
        wire: options.wire,
        link,
        token: readToken(options),
        fallbackLocal: options.fallback === 'local',
        threads: options.threads,
        reconnects: options.reconnect,
        // Retries of the first connection stay quiet: the outcome (a session, or one error line) says enough.
        onResume: (event) => event.kind !== 'retry' && reporter.info(describeResume(event)),
        record: options.record,
        onText: options.json ? undefined : (text) => process.stdout.write(text),
      });
      if (options.json) {
        process.stdout.write(
          `${JSON.stringify({
            ids: result.ids,
            promptIds: result.promptIds,
            text: result.text,
            metrics: result.metrics,
            link: link ? describeLink(link) : 'none',
            error: result.error?.message,
          })}\n`,
        );
      } else {
        process.stdout.write(result.text === undefined ? `${result.ids.join(',')}\n` : '\n');
        process.stderr.write(`${deviceMetricsTable(result.metrics)}\n`);
        if (result.metrics.fallback) reporter.warn(result.metrics.fallback);
      }
      if (result.error) throw result.error;
    });
}
