/**
 * `hat bench`'s core: one real serve-cloud process, the cloud-only server (when asked for), N device processes;
 * every scenario on the same prompts, warm-up runs discarded. Closed loop by default (each device sends its
 * next request when the last one finished; scenarios interleaved per prompt so load drift hits them alike);
 * with a rate, open loop: Poisson arrivals per scenario. Core code: it reports through the Reporter only.
 */
import { availableParallelism, cpus, platform, release } from 'node:os';
import type { Reporter } from '../reporter.ts';
import { spawnCloud } from '../apps/spawn-cloud.ts';
import { assignCores, onCores, type CoreMode } from './cores.ts';
import { describeLink, type LinkSpec } from '../runtime/link.ts';
import type { WireDTypeName } from '../runtime/protocol/frame.ts';
import { readModelConfig } from '../runtime/model-config.ts';
import { readManifest } from '../runtime/split-dir.ts';
import { seededUniform } from '../runtime/sampling.ts';
import type { SplitManifest } from '../split/manifest.ts';
import type { StageCosts } from './calibrate.ts';
import { DevicePool } from './device-pool.ts';
import { aggregate, withRatios, type ScenarioResult } from './metrics.ts';
import {
  checkContext,
  clampLengths,
  passageInAdapterCorpus,
  promptsFromFile,
  promptsOfLengths,
  splitTokenizerIfAny,
  type BenchPrompt,
} from './prompts.ts';
import type { RequestRecord } from './record.ts';
import { BASELINE, type Scenario } from './scenarios.ts';
import { paperTestbed, simulateTestbed, type Acceptance, type SimulatedResult } from './simulate.ts';
import { MAX_MERGED_ROWS } from '../runtime/cloud/scheduler.ts';
import { spawnTextCloud } from './text-cloud.ts';

export interface BenchOptions {
  splitDir: string;
  link: LinkSpec;
  promptsFile?: string;
  promptLengths: number[];
  promptsPerLength: number;
  maxNewTokens: number;
  repeats: number;
  devices: number;
  /** Requests per second (open loop); undefined = closed loop. */
  rate?: number;
  scenarios: Scenario[];
  sloTtftMs: number;
  warmup: number;
  wire: WireDTypeName;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  parallelBranches: number;
  threads?: number;
  /** Pin cloud and device processes to disjoint cores (separate machines in HAT) or let them share. */
  cores: CoreMode;
  cloudWorkers: number;
  simulate: boolean;
  deviceSlowdown: number;
  seed: number;
}

export interface BenchHeader {
  date: string;
  machine: string;
  model: string;
  split: string;
  link: string;
  load: string;
  prompts: string;
}

export interface BenchReport {
  header: BenchHeader;
  notes: string[];
  scenarios: ScenarioResult[];
  simulation?: {
    deviceSlowdown: number;
    costs: StageCosts;
    acceptance: Acceptance;
    results: SimulatedResult[];
    assumptions: string[];
  };
}

export function describeModel(splitDir: string, manifest: SplitManifest): string {
  const [, k] = manifest.parts.input.layers;
  const [m0, m1] = manifest.parts.middle.layers;
  const [o0, o1] = manifest.parts.output.layers;
  const adapter = manifest.adapter ? `adapter ${manifest.adapter.kind}` : 'no adapter';
  return (
    `${manifest.source.file}: ${manifest.source.layers} layers, ` +
    `hidden ${manifest.hidden.size} ${manifest.hidden.dtype}; ` +
    `device ${k} + head${o1 > o0 ? ` + ${o1 - o0}` : ''}, cloud ${m1 - m0}; ${adapter}`
  );
}

/** Why drafts could be meaningless here: random weights (synth's config.json says so) or a placeholder adapter. */
export function randomWeightNotes(splitDir: string, manifest: SplitManifest): string[] {
  const notes: string[] = [];
  const config = readModelConfig(splitDir) as { hat_synthetic?: { random_weights?: boolean } };
  if (config.hat_synthetic?.random_weights)
    notes.push(
      'RANDOM WEIGHTS (config.json: hat_synthetic.random_weights): ' +
        "the drafts are meaningless, so the speculative scenarios' TBT is not HAT's; " +
        "TTFT and the non-speculative rows are still real costs of this model's shape.",
    );
  if (manifest.adapter && JSON.stringify(manifest.adapter.metrics).includes('identity'))
    notes.push(
      'The adapter is an identity placeholder (manifest.adapter.metrics): ' +
        "drafts are the input part's own guesses, not a trained draft head.",
    );
  return notes;
}

function acceptanceFrom(records: readonly RequestRecord[]): Acceptance | undefined {
  const spec = records.filter((r) => r.scenario === 'hat' && !r.error);
  if (!spec.length) return undefined;
  const rounds = spec.reduce((s, r) => s + r.rounds, 0);
  const branches = spec.reduce((s, r) => s + r.parallelDrafting.branches, 0);
  return {
    tokensPerRound: rounds ? spec.reduce((s, r) => s + r.tokens - 1, 0) / rounds : 1,
    rowsPerRound: rounds ? spec.reduce((s, r) => s + r.decodeRowsUp, 0) / rounds : 1,
    parallelHitRate: branches ? spec.reduce((s, r) => s + r.parallelDrafting.hits, 0) / branches : 0,
  };
}

export async function runBench(options: BenchOptions, reporter: Reporter): Promise<BenchReport> {
  const manifest = readManifest(options.splitDir);
  const tokenizer = splitTokenizerIfAny(options.splitDir);
  // Lengths past the model's context are clamped to the longest that fits, as --fleet does (the defaults' 1,024
  // did not fit the bundled 1,024-position model with 128 new tokens); a prompts file is checked as it is.
  const clamped = options.promptsFile
    ? undefined
    : clampLengths(options.splitDir, options.promptLengths, options.maxNewTokens, options.maxDraft);
  const prompts: BenchPrompt[] = clamped
    ? promptsOfLengths(clamped.lengths, options.promptsPerLength, tokenizer, manifest.model?.vocabSize ?? 32)
    : promptsFromFile(options.promptsFile!, tokenizer, manifest.model?.vocabSize ?? Infinity);
  checkContext(options.splitDir, prompts, options.maxNewTokens, options.maxDraft);
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  const notes = randomWeightNotes(options.splitDir, manifest);
  if (clamped?.note) notes.push(clamped.note);
  const leak = clamped && tokenizer ? passageInAdapterCorpus(manifest) : undefined;
  if (leak) notes.push(leak);

  const startup = reporter.progress(
    'starting serve-cloud, the device processes and (for cloud-only) the full-model server',
  );
  const cores = assignCores(options.cores);
  // Pinned processes get one intra-op thread per core they own unless --threads says otherwise.
  const deviceThreads = options.threads ?? cores.devices?.length;
  const cloudThreads = options.threads ?? cores.cloud?.length;
  const cloud = await spawnCloud(
    options.splitDir,
    [
      '--workers',
      String(options.cloudWorkers),
      '--max-tokens-per-frame',
      String(Math.max(4096, longest)),
      '--max-sessions',
      String(options.devices * 2 + 4),
      ...(options.threads ? ['--threads', String(options.threads)] : []), // else serve-cloud takes its cores / workers
    ],
    { wrap: (command, args) => onCores(cores.cloud, command, args) },
  );
  const stops: Array<() => unknown> = [() => cloud.stop()];
  let failed = false;
  try {
    const textCloud = options.scenarios.some((s) => s.kind === 'cloud-only')
      ? await spawnTextCloud(options.splitDir, cloudThreads, cores.cloud)
      : undefined;
    if (textCloud) stops.push(() => textCloud.stop());
    const pool = await DevicePool.start(
      options.devices,
      {
        splitDir: options.splitDir,
        cloudUrl: cloud.url,
        textCloudUrl: textCloud?.url,
        link: options.link,
        wire: options.wire,
        draftThreshold: options.draftThreshold,
        maxDraft: options.maxDraft,
        parallelBranches: options.parallelBranches,
        threads: deviceThreads,
      },
      cores.devices,
    );
    stops.push(() => pool.close());
    startup.succeed(
      `serve-cloud at ${cloud.url}; ` +
        `${options.devices} device process(es)${textCloud ? `; cloud-only server at ${textCloud.url}` : ''}`,
    );
    const scenarios = options.scenarios.filter((s) => {
      if (!s.speculative || pool.hasAdapter) return true;
      notes.push(`${s.name} skipped: the split has no adapter (run \`hat train-adapter\`).`);
      return false;
    });

    const shortest = prompts.reduce((a, b) => (b.ids.length < a.ids.length ? b : a));
    const measured = prompts.length * options.repeats * scenarios.length;
    const total = scenarios.length * options.warmup + measured;
    let done = 0;
    const progress = reporter.progress(
      `bench: ${scenarios.length} scenarios × ${prompts.length} prompts × ${options.repeats}`,
    );
    const step = (what: string) => {
      done++;
      progress.update(`${what} (${done}/${total})`, done / total);
    };
    for (const scenario of scenarios) {
      for (let w = 0; w < options.warmup; w++) {
        await pool.onEach(scenario, shortest, options.maxNewTokens);
        step(`warm-up ${scenario.name}`);
      }
    }

    const records: RequestRecord[] = [];
    const wallMs = new Map<string, number>();
    if (options.rate === undefined) {
      const jobs: Array<{ scenario: Scenario; prompt: BenchPrompt }> = [];
      // Each prompt runs every scenario back to back, starting one scenario later each time: whatever a request
      // leaves behind (caches cold after the full model's weights went through them) hits every scenario alike.
      let turn = 0;
      for (let r = 0; r < options.repeats; r++) {
        for (const prompt of prompts) {
          for (let i = 0; i < scenarios.length; i++)
            jobs.push({ scenario: scenarios[(turn + i) % scenarios.length], prompt });
          turn++;
        }
      }
      await Promise.all(
        Array.from({ length: pool.size }, async () => {
          for (let job = jobs.shift(); job; job = jobs.shift()) {
            try {
              records.push(await pool.run(job.scenario, job.prompt, options.maxNewTokens));
            } catch (error) {
              jobs.length = 0; // the run is over: the other devices take no new request
              throw error;
            }
            step(job.scenario.name);
          }
        }),
      );
    } else {
      for (const scenario of scenarios) {
        const random = seededUniform(options.seed); // the same arrival times for every scenario
        const started = performance.now();
        let at = 0;
        const runs: Array<Promise<void>> = [];
        const timers: NodeJS.Timeout[] = [];
        for (let r = 0; r < options.repeats; r++) {
          for (const prompt of prompts) {
            at += -Math.log(1 - random()) * (1000 / options.rate);
            const due = at;
            runs.push(
              new Promise<void>((resolve) =>
                timers.push(setTimeout(resolve, Math.max(0, started + due - performance.now()))),
              ).then(async () => {
                records.push(await pool.run(scenario, prompt, options.maxNewTokens));
                step(scenario.name);
              }),
            );
          }
        }
        try {
          await Promise.all(runs);
        } catch (error) {
          timers.forEach(clearTimeout); // arrivals still due would otherwise fire at the closed pool
          throw error;
        }
        wallMs.set(scenario.name, performance.now() - started);
      }
    }
    progress.succeed(
      `bench: ${records.length} measured requests (${scenarios.length * options.warmup} warm-up rounds discarded)`,
    );

    const results = withRatios(
      scenarios.map((s) =>
        aggregate(
          s,
          records.filter((r) => r.scenario === s.name),
          {
            sloTtftMs: options.sloTtftMs,
            devices: options.devices,
            wallMs: wallMs.get(s.name),
          },
        ),
      ),
      BASELINE,
    );
    for (const r of results)
      if (r.failed)
        notes.push(
          `${r.name}: ${r.failed} request(s) failed: ${records.find((x) => x.scenario === r.name && x.error)?.error}`,
        );
    const hat = results.find((r) => r.name === 'hat');
    if (hat?.tokensPerRound != null && hat.tokensPerRound < 1.2)
      notes.push(
        `HAT committed only ${hat.tokensPerRound} tokens per round: ` +
          `the drafts are rarely accepted, so its TBT is not representative of a trained draft head.`,
      );

    const report: BenchReport = {
      header: {
        date: new Date().toISOString(),
        machine:
          `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${platform()} ${release()}, ` +
          `Node ${process.versions.node}; ${cores.description}`,
        model: describeModel(options.splitDir, manifest),
        split: options.splitDir,
        link: `${describeLink(options.link)} (applied on each device, both directions, all network scenarios)`,
        load:
          options.rate === undefined
            ? `closed loop: ${options.devices} device(s), ` +
              `each sends its next request when the last finished; ` +
              `${options.warmup} warm-up run(s) per device and scenario discarded`
            : `open loop: ${options.devices} device(s), ` +
              `Poisson arrivals at ${options.rate} req/s per scenario; ` +
              `${options.warmup} warm-up run(s) per device and scenario discarded`,
        prompts:
          `${prompts.length} prompts (${[...new Set(prompts.map((p) => p.ids.length))].join(', ')} ` +
          `tokens; ${prompts[0].source}) × ${options.repeats}, ` +
          `${options.maxNewTokens} new tokens each (greedy, stop token ignored)`,
      },
      notes,
      scenarios: results,
    };
    if (options.simulate) {
      const sim = reporter.progress("SIMULATION: measuring stage costs, then replaying HAT's testbed");
      const costs = await pool.calibrate();
      const measuredAcceptance = acceptanceFrom(records);
      const acceptance = measuredAcceptance ?? { tokensPerRound: 1, rowsPerRound: 1, parallelHitRate: 0 };
      // The intra-op threads per worker of the serve-cloud that g(X) was measured on (its own default when the
      // bench does not pass --threads): the simulated cloud's padded-row budget is serve-cloud's default for it.
      const cloudThreads =
        options.threads ?? Math.floor((cores.cloud?.length ?? availableParallelism()) / options.cloudWorkers);
      const config = paperTestbed(costs, acceptance, options.deviceSlowdown, cloudThreads);
      report.simulation = {
        deviceSlowdown: options.deviceSlowdown,
        costs,
        acceptance,
        results: await simulateTestbed(config),
        assumptions: [
          `${config.devices} devices, uplink ${config.uplinkMBs.join('–')} MB/s ` +
            `and downlink ${config.downlinkMBs.join('–')} MB/s ` +
            `drawn per device, ${config.oneWayLatencyMs} ms one way`,
          `Poisson arrivals at ${config.rates.join(' and ')} req/s, ` +
            `${config.requests} requests each (first 10 % warm-up), ` +
            `prompts exponential with mean ${config.meanPromptTokens} tokens (SpecBench's mean), ` +
            `${config.maxNewTokens} new tokens`,
          `device compute = measured device cost × ${options.deviceSlowdown} ` +
            `(device and cloud were measured on the same CPU); ` +
            `cloud g(X) = ${costs.cloud.baseMs.toFixed(2)} + ${costs.cloud.perTokenMs.toFixed(4)}·X ms as measured, ` +
            `one cloud worker batching as serve-cloud's scheduler does (verifications first, never padded with ` +
            `prompt chunks, one request per device, ≤ ${config.maxBatch} sessions and ` +
            `≤ ${config.maxBatchTokens} padded rows per run (a device's queued chunks joined: up to ` +
            `${MAX_MERGED_ROWS}), real pasts ≥ half the padded ones, ` +
            `each run g(padded rows)), no pipeline stages (P = 1)`,
          `chunk sizes ('chunk-only', 'hat') from each device's ChunkPlanner fed the simulated timings; ` +
            `links through the EMULATED link's model (FIFO serialisation, no jitter)`,
          `decoding: ${acceptance.tokensPerRound.toFixed(2)} tokens ` +
            `and ${acceptance.rowsPerRound.toFixed(2)} uploaded rows per round, ` +
            `parallel-drafting hit rate ${(acceptance.parallelHitRate * 100).toFixed(0)} % ` +
            (measuredAcceptance
              ? '(measured on the hat scenario)'
              : '(ASSUMED: the hat scenario did not run or every request failed, so its rows are not HAT)'),
        ],
      };
      sim.succeed('SIMULATION done');
    }
    return report;
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    await stopAll(stops, !failed);
  }
}

/**
 * Runs every stop, last started first, even when one throws: a device that died must not leave serve-cloud
 * running. A stop's error is thrown only when the run itself succeeded; otherwise the run's error is the one told.
 */
async function stopAll(stops: ReadonlyArray<() => unknown>, throwFirstError: boolean): Promise<void> {
  let first: unknown;
  for (const stop of [...stops].reverse()) {
    try {
      await stop();
    } catch (error) {
      first ??= error;
    }
  }
  if (throwFirstError && first !== undefined) throw first;
}
