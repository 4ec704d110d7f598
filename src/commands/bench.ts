import type { Command } from 'commander';
import { intOption, numberOption, parseOptions, z } from './common.ts';
import { benchToDir, checkOutDir, selectScenarios } from '../bench/index.ts';
import { fleetToDir, type FleetOptions, type LoadShape } from '../bench/fleet/index.ts';
import { parseLinkSpec } from '../runtime/link.ts';
import { ROWS_ADVICE_WHEN } from '../runtime/cloud/rows-advice.ts';
import { terminalReporter } from '../reporter.ts';
import { HatError } from '../errors.ts';

const lengths = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'a comma-separated list of token counts')
  .transform((s) => s.split(',').map(Number))
  .refine((xs) => xs.every((x) => x >= 1), 'lengths must be ≥ 1');

/** `--rate 2,4,8,closed`: Poisson rates (per second) and/or `closed` (closed loop). */
const rates = z
  .string()
  .regex(/^(closed|\d+(\.\d+)?)(,(closed|\d+(\.\d+)?))*$/, 'a comma-separated list of rates (or closed)')
  .transform((s) =>
    s
      .split(',')
      .map((x): LoadShape => (x === 'closed' ? { kind: 'closed-loop' } : { kind: 'poisson', rate: Number(x) })),
  )
  .refine(
    (xs) => xs.every((x) => x.kind === 'closed-loop' || (x.rate >= 0.001 && x.rate <= 10000)),
    'rates must be in 0.001..10000',
  );

const FLEET_DEFAULTS = { promptLengths: [128, 384, 896], maxNewTokens: 64, sloTtft: 1000 };
const BENCH_DEFAULTS = { promptLengths: [128, 512, 1024], maxNewTokens: 128, sloTtft: 500 };

const schema = z.object({
  link: z.string(),
  prompts: z.string().optional(),
  promptLengths: lengths.optional(),
  promptsPerLength: intOption(1, 1000),
  maxNewTokens: intOption(1, 100000).optional(),
  repeats: intOption(1, 1000),
  devices: intOption(1, 256),
  rate: rates.optional(),
  fleet: intOption(1, 1000).optional(),
  duration: numberOption(0.1, 86400),
  drain: numberOption(0, 86400),
  sloTbt: numberOption(0),
  maxBatch: intOption(1, 1024).optional(),
  maxBatchTokens: intOption(1, 1_000_000).optional(),
  costRule: z.enum(['on', 'off']),
  rowsAdvice: z.enum(ROWS_ADVICE_WHEN).optional(),
  minBatch: intOption(2, 1024).optional(),
  recordings: z.string().optional(),
  acceptanceFrom: z.string().optional(),
  scenarios: z.string().optional(),
  sarathiChunk: intOption(1, 65536),
  sloTtft: numberOption(0).optional(),
  warmup: intOption(0, 100),
  wire: z.enum(['fp32', 'fp16', 'int8']),
  draftThreshold: z.union([z.literal('auto'), z.coerce.number().min(0).max(1)]),
  maxDraft: intOption(1, 64),
  parallelBranches: intOption(1, 4),
  threads: intOption(1, 256).optional(),
  cores: z.enum(['auto', 'split', 'shared']),
  cloudWorkers: intOption(1, 64),
  simulate: z.boolean().optional(),
  deviceSlowdown: numberOption(0.01, 1000),
  seed: intOption(0),
  out: z.string().min(1),
  force: z.boolean().optional(),
  json: z.boolean().optional(),
});

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description(
      'HAT against U-shape, U-Sarathi, U-Spec, cloud-only and device-only on the same prompts: table, ' +
        'results.json, SVG charts; --fleet N: many EMULATED devices on one serve-cloud, batching on and off',
    )
    .argument('<split-dir>', 'split directory (with adapter.onnx for the speculative scenarios)')
    .option(
      '--link <profile|spec>',
      'EMULATED link on every device: wifi, 4g, lan, none, or up=5MB,down=10MB,rtt=6,jitter=1',
      'wifi',
    )
    .option('--prompts <file.jsonl>', 'one {"prompt": "..."} or {"ids": [...]} per line (instead of --prompt-lengths)')
    .option(
      '--prompt-lengths <list>',
      "prompt lengths in tokens (default 128,512,1024; --fleet: 128,384,896; clamped to the model's context)",
    )
    .option('--prompts-per-length <n>', 'different prompts of each length', '2')
    .option('--max-new-tokens <n>', 'tokens generated per request, the stop token ignored (default 128; --fleet: 64)')
    .option('--repeats <n>', 'times each prompt runs per scenario', '1')
    .option('--devices <n>', 'device processes', '1')
    .option(
      '--rate <req/s>',
      'open loop: Poisson arrivals at this rate (default: closed loop); --fleet: a list of ' +
        'sessions/s, `closed` for a saturated closed loop (default: closed)',
    )
    .option(
      '--scenarios <list>',
      'comma-separated subset: hat,u-shape,u-sarathi,u-spec,chunk-only,chunk-spec,cloud-only,device-only',
    )
    .option('--sarathi-chunk <n>', "u-sarathi's fixed prompt chunk", '64')
    .option('--slo-ttft <ms>', 'TTFT SLO for the attainment column (default 500; --fleet: 1000)')
    .option(
      '--fleet <n>',
      'fleet benchmark: record real sessions (hat, u-shape), replay them as N EMULATED devices ' +
        'against serve-cloud with batching on and with --max-batch 1',
    )
    .option('--duration <s>', '--fleet: seconds of arrivals per run', '20')
    .option('--drain <s>', '--fleet: seconds sessions may run on after the window before they count as failed', '120')
    .option('--slo-tbt <ms>', '--fleet: mean TBT SLO per session', '200')
    .option('--max-batch <n>', "--fleet: serve-cloud's --max-batch in the batched runs (default: its own)")
    .option(
      '--max-batch-tokens <n>',
      "--fleet: serve-cloud's --max-batch-tokens in the batched runs (default: the knee it measures)",
    )
    .option('--cost-rule <on|off>', "--fleet: serve-cloud's --cost-rule in the batched runs", 'off')
    .option('--min-batch <n>', "--fleet: serve-cloud's --min-batch in the batched runs (default: its own)")
    .option('--rows-advice <when>', "--fleet: serve-cloud's --rows-advice in the batched runs (default: its own)")
    .option('--recordings <dir>', '--fleet: replay the recordings an earlier --fleet run wrote to its --out')
    .option(
      '--acceptance-from <dir>',
      '--fleet on random weights: a trained split (default fixtures/default-split) or ' +
        'its recordings, whose hat rounds give the acceptance',
    )
    .option('--warmup <n>', 'discarded runs per device and scenario', '1')
    .option('--wire <dtype>', 'hidden-state dtype on the wire', 'fp16')
    .option('--draft-threshold <auto|η>', 'draft stop threshold', 'auto')
    .option('--max-draft <n>', 'most drafts per round', '6')
    .option(
      '--parallel-branches <k>',
      "candidates parallel drafting branches on (HAT's top-k; 1 measured as fast as 2 with less device work)",
      '1',
    )
    .option('--threads <n>', 'onnxruntime intra-op threads per process (default: one per core it may use)')
    .option(
      '--cores <mode>',
      'split: pin cloud and device processes to disjoint cores with taskset (separate ' +
        'machines in HAT); shared: let them compete; auto: split when possible',
      'auto',
    )
    .option('--cloud-workers <n>', 'serve-cloud worker threads', '1')
    .option('--simulate', "also replay HAT's testbed in a discrete-event SIMULATION fed with the measured costs")
    .option(
      '--device-slowdown <x>',
      "SIMULATION: device compute = measured × this (HAT's Jetsons vs its A6000 cloud)",
      '5',
    )
    .option('--seed <n>', 'arrival-time seed', '1')
    .option('--out <dir>', 'results.json, report.txt and charts go here', 'bench-results')
    .option('--force', 'replace a non-empty --out')
    .option('--json', 'print results.json (written to --out as well) instead of the table')
    .action(async (splitDir: string, raw: Record<string, unknown>) => {
      const o = parseOptions(schema, raw);
      checkOutDir(
        o.out,
        Boolean(o.force),
        [splitDir, o.prompts, o.recordings, o.acceptanceFrom].filter((p): p is string => p !== undefined),
      );
      const reporter = terminalReporter({ quiet: o.json });
      if (o.fleet !== undefined) {
        const { text, json, files } = await fleetToDir(fleetOptions(splitDir, o, o.fleet), o.out, reporter);
        process.stdout.write(o.json ? json : `${text}\n\nwritten: ${o.out}/${files.join(', ')}\n`);
        return;
      }
      const rate = o.rate?.[0];
      if (o.rate && (o.rate.length > 1 || rate?.kind !== 'poisson')) {
        throw new HatError(
          'BAD_OPTION',
          '--rate takes one rate (requests/s) without --fleet',
          'give one number, or drop --rate for a closed loop',
        );
      }
      const options = {
        splitDir,
        link: parseLinkSpec(o.link),
        promptsFile: o.prompts,
        promptLengths: o.promptLengths ?? BENCH_DEFAULTS.promptLengths,
        promptsPerLength: o.promptsPerLength,
        maxNewTokens: o.maxNewTokens ?? BENCH_DEFAULTS.maxNewTokens,
        repeats: o.repeats,
        devices: o.devices,
        rate: rate?.kind === 'poisson' ? rate.rate : undefined,
        scenarios: selectScenarios(o.scenarios, o.sarathiChunk),
        sloTtftMs: o.sloTtft ?? BENCH_DEFAULTS.sloTtft,
        warmup: o.warmup,
        wire: o.wire,
        draftThreshold: o.draftThreshold,
        maxDraft: o.maxDraft,
        parallelBranches: o.parallelBranches,
        threads: o.threads,
        cores: o.cores,
        cloudWorkers: o.cloudWorkers,
        simulate: Boolean(o.simulate),
        deviceSlowdown: o.deviceSlowdown,
        seed: o.seed,
      };
      const { text, json } = await benchToDir(options, o.out, reporter);
      process.stdout.write(
        o.json
          ? json
          : `${text}\n\nwritten: ${o.out}/results.json, report.txt, ttft-by-scenario.svg, tbt-by-scenario.svg, ` +
              'ttft-vs-prompt-length.svg\n',
      );
    });
}

/** --fleet's options, with its own defaults where `hat bench`'s do not fit. */
function fleetOptions(splitDir: string, o: z.infer<typeof schema>, devices: number): FleetOptions {
  if (o.prompts)
    throw new HatError(
      'BAD_OPTION',
      '--fleet picks held-out prompts of --prompt-lengths, not --prompts',
      'drop --prompts, and give --prompt-lengths if the defaults do not suit',
    );
  return {
    splitDir,
    devices,
    loads: o.rate ?? [{ kind: 'closed-loop' }],
    durationS: o.duration,
    drainS: o.drain,
    link: parseLinkSpec(o.link),
    wire: o.wire,
    draftThreshold: o.draftThreshold,
    maxDraft: o.maxDraft,
    parallelBranches: o.parallelBranches,
    threads: o.threads,
    cores: o.cores,
    cloudWorkers: o.cloudWorkers,
    maxBatch: o.maxBatch,
    maxBatchTokens: o.maxBatchTokens,
    costRule: o.costRule === 'on',
    rowsAdvice: o.rowsAdvice,
    minBatch: o.minBatch,
    promptLengths: o.promptLengths ?? FLEET_DEFAULTS.promptLengths,
    promptsPerLength: o.promptsPerLength,
    maxNewTokens: o.maxNewTokens ?? FLEET_DEFAULTS.maxNewTokens,
    sloTtftMs: o.sloTtft ?? FLEET_DEFAULTS.sloTtft,
    sloTbtMs: o.sloTbt,
    seed: o.seed,
    recordingsDir: o.recordings,
    acceptanceFrom: o.acceptanceFrom,
    warmup: o.warmup > 0,
  };
}
