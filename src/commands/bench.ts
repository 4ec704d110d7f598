import type { Command } from 'commander';
import { intOption, numberOption, parseOptions, z } from './common.ts';
import { benchToDir, checkOutDir, selectScenarios } from '../bench/index.ts';
import { parseLinkSpec } from '../runtime/link.ts';
import { terminalReporter } from '../reporter.ts';

const lengths = z.string().regex(/^\d+(,\d+)*$/, 'a comma-separated list of token counts').transform((s) => s.split(',').map(Number)).refine((xs) => xs.every((x) => x >= 1), 'lengths must be ≥ 1');

const schema = z.object({
  link: z.string(),
  prompts: z.string().optional(),
  promptLengths: lengths,
  promptsPerLength: intOption(1, 1000),
  maxNewTokens: intOption(1, 100000),
  repeats: intOption(1, 1000),
  devices: intOption(1, 256),
  rate: numberOption(0.001, 10000).optional(),
  scenarios: z.string().optional(),
  sarathiChunk: intOption(1, 65536),
  sloTtft: numberOption(0),
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
    .description('HAT against U-shape, U-Sarathi, U-Spec, cloud-only and device-only on the same prompts: table, results.json, SVG charts')
    .argument('<split-dir>', 'split directory (with adapter.onnx for the speculative scenarios)')
    .option('--link <profile|spec>', 'EMULATED link on every device: wifi, 4g, lan, none, or up=5MB,down=10MB,rtt=6,jitter=1', 'wifi')
    .option('--prompts <file.jsonl>', 'one {"prompt": "..."} or {"ids": [...]} per line (instead of --prompt-lengths)')
    .option('--prompt-lengths <list>', 'prompt lengths in tokens', '128,512,1024')
    .option('--prompts-per-length <n>', 'different prompts of each length', '2')
    .option('--max-new-tokens <n>', 'tokens generated per request (the stop token is ignored)', '128')
    .option('--repeats <n>', 'times each prompt runs per scenario', '1')
    .option('--devices <n>', 'device processes', '1')
    .option('--rate <req/s>', 'open loop: Poisson arrivals at this rate (default: closed loop)')
    .option('--scenarios <list>', 'comma-separated subset: hat,u-shape,u-sarathi,u-spec,chunk-only,chunk-spec,cloud-only,device-only')
    .option('--sarathi-chunk <n>', 'u-sarathi\'s fixed prompt chunk', '64')
    .option('--slo-ttft <ms>', 'TTFT SLO for the attainment column', '500')
    .option('--warmup <n>', 'discarded runs per device and scenario', '1')
    .option('--wire <dtype>', 'hidden-state dtype on the wire', 'fp16')
    .option('--draft-threshold <auto|η>', 'draft stop threshold', 'auto')
    .option('--max-draft <n>', 'most drafts per round', '6')
    .option('--parallel-branches <k>', 'candidates parallel drafting branches on (HAT\'s top-k; 1 measured as fast as 2 with less device work)', '1')
    .option('--threads <n>', 'onnxruntime intra-op threads per process (default: one per core it may use)')
    .option('--cores <mode>', 'split: pin cloud and device processes to disjoint cores with taskset (separate machines in HAT); shared: let them compete; auto: split when possible', 'auto')
    .option('--cloud-workers <n>', 'serve-cloud worker threads', '1')
    .option('--simulate', 'also replay HAT\'s testbed in a discrete-event SIMULATION fed with the measured costs')
    .option('--device-slowdown <x>', 'SIMULATION: device compute = measured × this (HAT\'s Jetsons vs its A6000 cloud)', '5')
    .option('--seed <n>', 'arrival-time seed', '1')
    .option('--out <dir>', 'results.json, report.txt and charts go here', 'bench-results')
    .option('--force', 'replace a non-empty --out')
    .option('--json', 'print results.json instead of the table')
    .action(async (splitDir: string, raw: Record<string, unknown>) => {
      const o = parseOptions(schema, raw);
      checkOutDir(o.out, Boolean(o.force));
      const reporter = terminalReporter({ quiet: o.json });
      const options = {
        splitDir, link: parseLinkSpec(o.link), promptsFile: o.prompts, promptLengths: o.promptLengths, promptsPerLength: o.promptsPerLength,
        maxNewTokens: o.maxNewTokens, repeats: o.repeats, devices: o.devices, rate: o.rate, scenarios: selectScenarios(o.scenarios, o.sarathiChunk),
        sloTtftMs: o.sloTtft, warmup: o.warmup, wire: o.wire, draftThreshold: o.draftThreshold, maxDraft: o.maxDraft, parallelBranches: o.parallelBranches, threads: o.threads, cores: o.cores,
        cloudWorkers: o.cloudWorkers, simulate: Boolean(o.simulate), deviceSlowdown: o.deviceSlowdown, seed: o.seed,
      };
      const { text } = await benchToDir(options, o.out, reporter);
      process.stdout.write(o.json ? `${JSON.stringify({ out: o.out })}\n` : `${text}\n\nwritten: ${o.out}/results.json, report.txt, ttft-by-scenario.svg, tbt-by-scenario.svg, ttft-vs-prompt-length.svg\n`);
    });
}
