/**
 * `hat bench <split-dir> --fleet N`'s core. First it records real device sessions of the split on held-out prompts
 * of mixed lengths in two modes — hat (chunked prefill + speculative rounds + parallel drafting) and u-shape (whole
 * prompt in one request, one round trip per token, no drafts) — then replays them as N EMULATED devices from this
 * process (replay.ts, load.ts) against a real serve-cloud process, once with batching on (the split's default or
 * --max-batch) and once with --max-batch 1 (both processes live, their runs in a counterbalanced order: runOrder):
 * four runs (mode × batching) per offered load. Each run is measured from the devices' side (throughput, TTFT, TBT,
 * SLO,
 * exactness against the recording) and from the cloud's (/metrics before and after: batch sizes, padding; /proc:
 * CPU). Core code: it reports through the Reporter only.
 */
import { cpus, platform, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HatError } from '../../errors.ts';
import type { Reporter } from '../../reporter.ts';
import { spawnCloud, type SpawnedCloud } from '../../apps/spawn-cloud.ts';
import { configContext } from '../../runtime/model-config.ts';
import { describeLink, type LinkSpec } from '../../runtime/link.ts';
import type { WireDTypeName } from '../../runtime/protocol/frame.ts';
import { manifestHash, readManifest } from '../../runtime/split-dir.ts';
import { frameHeader, type SessionRecording } from '../../runtime/device/session-recorder.ts';
import { assignCores, onCores, type CoreMode } from '../cores.ts';
import { clampLengths, passageInAdapterCorpus, promptsOfLengths, splitTokenizerIfAny } from '../prompts.ts';
import { describeModel, randomWeightNotes, type BenchHeader } from '../run-bench.ts';
import { allScenarios, type Scenario } from '../scenarios.ts';
import { fleetRunStats, type FleetRunStats } from './fleet-metrics.ts';
import { runLoad, type LoadShape } from './load.ts';
import { parsePrometheus, type Sample } from './prom-text.ts';
import { readRecordings, recordSessions, type RecordJob, type RecordOptions } from './record-sessions.ts';
import { replaySession } from './replay.ts';
import { cpuSeconds, ownCores, pinSelf } from './server-cpu.ts';
import { oneRowCost, roundCosts, transplantRounds } from './transplant.ts';
import { DEFAULT_ROWS_ADVICE, type RowsAdviceWhen } from '../../runtime/cloud/rows-advice.ts';

export const DEFAULT_SPLIT = fileURLToPath(new URL('../../../fixtures/default-split', import.meta.url));

export interface FleetOptions {
  splitDir: string;
  /** EMULATED devices. */
  devices: number;
  /** Offered loads, each run in every configuration. */
  loads: LoadShape[];
  durationS: number;
  /** After the window, how long sessions may run on before they are stopped (and fail). */
  drainS: number;
  link: LinkSpec;
  wire: WireDTypeName;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  parallelBranches: number;
  threads?: number;
  cores: CoreMode;
  cloudWorkers: number;
  /** --max-batch of the batched runs (default: serve-cloud's). */
  maxBatch?: number;
  /** --max-batch-tokens of the batched runs (default: serve-cloud's measured knee). */
  maxBatchTokens?: number;
  /** --cost-rule on for the batched runs (serve-cloud's default: off). */
  costRule?: boolean;
  /** --rows-advice of the batched runs (default: serve-cloud's, DEFAULT_ROWS_ADVICE). */
  rowsAdvice?: RowsAdviceWhen;
  /** --min-batch of the batched runs (default: serve-cloud's). */
  minBatch?: number;
  promptLengths: number[];
  promptsPerLength: number;
  maxNewTokens: number;
  sloTtftMs: number;
  sloTbtMs: number;
  seed: number;
  /** Replay these recordings (a folder an earlier run wrote) instead of recording. */
  recordingsDir?: string;
  /** Random-weight splits: where the drafting acceptance comes from (a trained split, or recordings of one). */
  acceptanceFrom?: string;
  /** One discarded solo replay per mode before each configuration's runs. */
  warmup: boolean;
}

export interface RecordingSummary {
  mode: string;
  sessions: number;
  promptTokens: number[];
  tokens: number;
  rounds: number;
  /** Tokens committed per verification round, the first token (from the prompt) aside. */
  tokensPerRound: number;
  synthetic?: string;
}

export interface FleetReport {
  header: BenchHeader & { devices: string; slo: string; batching: string };
  notes: string[];
  recordings: RecordingSummary[];
  runs: FleetRunStats[];
  /** What was recorded in this run, to write under --out (replayable with --recordings). */
  recorded: SessionRecording[];
}

const MODES = ['hat', 'u-shape'] as const;

function scenario(name: string): Scenario {
  return allScenarios(64).find((s) => s.name === name)!;
}

function isRandomWeights(splitDir: string, manifest: ReturnType<typeof readManifest>): boolean {
  return randomWeightNotes(splitDir, manifest).some((n) => n.startsWith('RANDOM WEIGHTS'));
}

function summarizeRecordings(recordings: readonly SessionRecording[]): RecordingSummary[] {
  const modes = [...new Set(recordings.map((r) => r.mode))];
  return modes.map((mode) => {
    const group = recordings.filter((r) => r.mode === mode);
    const rounds = group.reduce((n, r) => n + r.frames.filter((f) => (frameHeader(f).flags & 2) === 0).length, 0);
    const tokens = group.reduce((n, r) => n + r.tokens, 0);
    return {
      mode,
      sessions: group.length,
      promptTokens: [...new Set(group.map((r) => r.promptTokens))].sort((a, b) => a - b),
      tokens,
      rounds,
      tokensPerRound: rounds ? Number(((tokens - group.length) / rounds).toFixed(2)) : 0,
      ...(group[0].synthetic ? { synthetic: group[0].synthetic } : {}),
    };
  });
}

async function scrape(cloud: SpawnedCloud): Promise<Sample[]> {
  const url = cloud.url.replace(/^ws/, 'http').replace(/\/?$/, '/metrics');
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new HatError(
      'NETWORK',
      `cannot read ${url}: ${(error as Error).message}`,
      'did serve-cloud exit? see its log',
      {
        cause: error,
      },
    );
  }
  if (!response.ok) throw new HatError('NETWORK', `${url} answered ${response.status}`);
  return parsePrometheus(await response.text());
}

/** The first JSON line of serve-cloud's log with this `event`. */
function loggedEvent(cloud: SpawnedCloud, event: string): Record<string, unknown> | undefined {
  for (const line of cloud.log) {
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.event === event) return entry;
    } catch {
      /* a partial line */
    }
  }
  return undefined;
}

interface LoggedBatching {
  maxBatch: number;
  mode?: string;
  maxBatchTokens?: number;
  /** Rows a prompt's queued chunks may be merged up to (scheduler.ts mergedRowsFor). */
  mergedRows?: number;
  /** Sessions a gathered batch of verifications must hold (--min-batch). */
  minBatch?: number;
  /** The knee probe serve-cloud ran at start when --max-batch-tokens was left to its default. */
  knee?: { rows?: number; bracketed?: boolean; times?: Array<{ rows: number; ms: number }>; failed?: string };
}

/** The batch limits the cloud settled on and its split's batching mode (its 'batching' log line). */
function loggedMaxBatch(cloud: SpawnedCloud, asked: number | undefined): LoggedBatching {
  const entry = loggedEvent(cloud, 'batching') as Partial<LoggedBatching> | undefined;
  return entry?.maxBatch ? { ...entry, maxBatch: entry.maxBatch } : { maxBatch: asked ?? 0 };
}

/** How the batched cloud's --max-batch-tokens came about, for the report's header. */
function describeBudget(batching: LoggedBatching, asked: number | undefined): string {
  if (batching.maxBatchTokens === undefined) return '';
  const budget = `, --max-batch-tokens ${batching.maxBatchTokens}`;
  if (asked !== undefined) return budget;
  const { knee } = batching;
  if (knee?.failed) return `${budget} (serve-cloud's fallback: its knee probe failed: ${knee.failed})`;
  const times = knee?.times?.map((t) => `${t.rows}: ${(t.ms / t.rows).toFixed(2)}`).join(', ');
  if (!times) return budget;
  const how =
    knee?.bracketed === false ? 'at least the fallback: cost per row still fell at the largest probe' : 'the knee';
  return `${budget} (${how} serve-cloud measured at start; ms per row of a run of n rows: ${times})`;
}

/** The sessions the cloud admits at once (its 'limits' log line), if it logged them. */
function loggedSessionLimit(cloud: SpawnedCloud): number | undefined {
  return (loggedEvent(cloud, 'limits') as { maxSessions?: number } | undefined)?.maxSessions || undefined;
}

function describeLoad(load: LoadShape, devices: number): string {
  return load.kind === 'poisson' ? `Poisson ${load.rate}/s` : `closed loop (${devices} devices, saturated)`;
}

export async function runFleet(options: FleetOptions, reporter: Reporter): Promise<FleetReport> {
  const manifest = readManifest(options.splitDir);
  const hash = manifestHash(manifest);
  const randomWeights = isRandomWeights(options.splitDir, manifest);
  const notes = randomWeightNotes(options.splitDir, manifest).filter((n) => !n.startsWith('RANDOM WEIGHTS'));
  if (!manifest.adapter) {
    notes.push(
      'the split has no adapter, so hat sessions cannot draft: only u-shape runs (add one with `hat ' +
        'train-adapter`; on random weights `--kind linear --self-generate 256` is enough to time drafting).',
    );
  }
  const modes = manifest.adapter ? [...MODES] : ['u-shape'];
  const { maxNewTokens, maxDraft } = options;
  const { lengths, note } = clampLengths(options.splitDir, options.promptLengths, maxNewTokens, maxDraft);
  if (note) notes.push(note);
  const tokenizer = splitTokenizerIfAny(options.splitDir);
  const prompts = promptsOfLengths(lengths, options.promptsPerLength, tokenizer, manifest.model?.vocabSize ?? 32);
  const leak = tokenizer ? passageInAdapterCorpus(manifest) : undefined;
  if (leak) notes.push(leak);
  // Given recordings are read before any serve-cloud starts (a wrong folder fails at once); their sessions, not
  // --prompt-lengths and --max-new-tokens, size serve-cloud's limits and the report's prompt line.
  const given = options.recordingsDir ? readRecordings(options.recordingsDir) : undefined;
  const longest = given ? Math.max(...given.map((r) => r.promptTokens)) : Math.max(...prompts.map((p) => p.ids.length));
  const longestSession = given ? Math.max(...given.map((r) => r.promptTokens + r.tokens)) : longest + maxNewTokens;

  const cores = assignCores(options.cores);
  const original = ownCores();
  const pinned = cores.devices && original ? pinSelf(cores.devices.join(',')) : false;
  if (cores.devices && !pinned) {
    notes.push('this process (the recording device and the EMULATED devices) could not be pinned to its cores');
  }
  const deviceThreads = options.threads ?? cores.devices?.length;
  // The batched cloud's --rows-advice: the one given, else serve-cloud's default (the same constant).
  const rowsAdvice = options.rowsAdvice ?? DEFAULT_ROWS_ADVICE;
  // Sessions reach at most the longest prompt + the new tokens + one round of drafts: serve-cloud admits sessions
  // by KV bytes at its context, so a split's full context (32,768 positions for a Qwen2.5 config) would admit a
  // handful of the N devices.
  const sessionPositions = Math.min(
    longestSession + maxDraft + 8,
    configContext(options.splitDir) ?? Number.MAX_SAFE_INTEGER,
  );
  const cloudArgs = (maxBatch: number | undefined) => [
    '--workers',
    String(options.cloudWorkers),
    '--max-context',
    String(sessionPositions),
    '--max-tokens-per-frame',
    String(Math.max(4096, longest)),
    '--max-sessions',
    String(options.devices * 2 + 8),
    '--idle-timeout',
    '600',
    ...(options.threads ? ['--threads', String(options.threads)] : []),
    ...(maxBatch !== undefined ? ['--max-batch', String(maxBatch)] : []),
    ...(maxBatch !== 1 && options.maxBatchTokens !== undefined
      ? ['--max-batch-tokens', String(options.maxBatchTokens)]
      : []),
    ...(maxBatch !== 1 && options.costRule ? ['--cost-rule', 'on'] : []),
    ...(maxBatch !== 1 && options.minBatch !== undefined ? ['--min-batch', String(options.minBatch)] : []),
    ...(maxBatch !== 1 && options.rowsAdvice !== undefined ? ['--rows-advice', options.rowsAdvice] : []),
  ];
  const startCloud = (splitDir: string, maxBatch: number | undefined) =>
    spawnCloud(splitDir, cloudArgs(maxBatch), { wrap: (command, args) => onCores(cores.cloud, command, args) });
  const recordOptions = (splitDir: string, cloudUrl: string): RecordOptions => ({
    splitDir,
    cloudUrl,
    link: options.link,
    wire: options.wire,
    draftThreshold: options.draftThreshold,
    maxDraft: options.maxDraft,
    parallelBranches: options.parallelBranches,
    threads: deviceThreads,
    maxNewTokens: options.maxNewTokens,
  });
  const progressOf = (label: string) => {
    const progress = reporter.progress(label);
    const step = (done: number, total: number, what: string) => {
      progress.update(`${label}: ${what} (${done}/${total})`, done / total);
    };
    return { progress, step };
  };

  // Both configurations live side by side (on the cloud cores; the idle one costs memory only), so their runs can
  // alternate and drifting machine load hits both alike.
  const clouds: Array<{ maxBatchAsked: number | undefined; cloud?: SpawnedCloud }> = [
    { maxBatchAsked: options.maxBatch },
    { maxBatchAsked: 1 },
  ];
  const start = async (entry: (typeof clouds)[number], label: string) => {
    const startup = reporter.progress(`starting serve-cloud (${label})`);
    entry.cloud = await startCloud(options.splitDir, entry.maxBatchAsked);
    startup.succeed(`serve-cloud at ${entry.cloud.url} (${label})`);
    return entry.cloud;
  };
  try {
    const cloud = await start(clouds[0], 'batching on');

    // --- recordings -------------------------------------------------------------------------------------------
    let recorded: SessionRecording[] = [];
    let available: SessionRecording[];
    if (given) {
      available = given;
      const foreign = foreignRecording(available, hash);
      if (foreign) {
        throw new HatError(
          'BAD_OPTION',
          `--recordings ${options.recordingsDir} holds sessions of another split ` +
            `(${foreign.manifestHash.slice(0, 12)})`,
          'record them from this split (drop --recordings)',
        );
      }
    } else {
      const jobs: RecordJob[] = modes.map((mode) =>
        mode === 'hat' && randomWeights
          ? { mode: 'hat-eta0', scenario: scenario('hat'), draftThreshold: 0 }
          : { mode, scenario: scenario(mode) },
      );
      const { progress, step } = progressOf('recording real device sessions');
      recorded = await recordSessions(recordOptions(options.splitDir, cloud.url), jobs, prompts, step);
      progress.succeed(
        `recorded ${recorded.length} real device sessions (${jobs.map((j) => j.mode).join(', ')}; ` +
          `${[...new Set(prompts.map((p) => p.ids.length))].join('/')}-token prompts)`,
      );
      available = recorded;
    }
    const byMode = (mode: string) => available.filter((r) => r.mode === mode);
    const replayed = new Map<string, SessionRecording[]>();
    replayed.set('u-shape', byMode('u-shape'));
    if (modes.includes('hat')) {
      if (randomWeights) {
        const patterns = await acceptancePatterns(options, available, recordOptions, startCloud, reporter);
        recorded.push(...patterns.recorded);
        const costs = roundCosts(byMode('u-shape'), byMode('hat-eta0'));
        const { hat } = patterns;
        replayed.set(
          'hat',
          byMode('hat-eta0').map((own, i) => transplantRounds(own, hat[i % hat.length], costs)),
        );
        notes.push(
          "RANDOM WEIGHTS (config.json: hat_synthetic.random_weights): the hat sessions' acceptance — rows " +
            'per verification and tokens committed per round — comes from recorded hat sessions of the trained model ' +
            `${patterns.source}; their prompt chunks, hidden states and device times are this split's own (recorded ` +
            "at η = 0 for the cost of drafting); only the prompt chunks' results are checked against a recording. " +
            "u-shape does not draft and is this split's own.",
        );
      } else {
        replayed.set('hat', byMode('hat'));
      }
    }
    for (const mode of modes) {
      if (!replayed.get(mode)?.length) {
        throw new HatError('BAD_OPTION', `no ${mode} recordings to replay`, 'record them (drop --recordings)');
      }
    }
    // hat devices follow the cloud's rows advice: a recorded round of more rows is split (replay.ts, SIMULATION).
    // The note only where the batched cloud gives advice: with --rows-advice off nothing is simulated.
    const advice = modes.includes('hat') ? { oneRow: oneRowCost(byMode('u-shape')) } : undefined;
    if (advice && rowsAdvice !== 'off') {
      notes.push(
        "SIMULATION of drafting fewer: hat devices follow the cloud's rows advice (result advisedRows). A recorded " +
          'round of more rows than advised is sent as consecutive rounds of at most that many, each committing the ' +
          "accepted drafts among its rows plus one (greedy, so its results still match the recording's rows); their " +
          "device times and commit delays are interpolated by rows between this split's 1-row (U-shape) round and " +
          'the recorded one.',
      );
    }

    // --- four runs per load: modes × batching on/off, in a counterbalanced order (runOrder) -----------------------
    await start(clouds[1], '--max-batch 1: batching off');
    const configurations = clouds.map(({ maxBatchAsked, cloud: c }) => ({
      cloud: c!,
      ...loggedMaxBatch(c!, maxBatchAsked),
    }));
    const batchingNote =
      configurations[0].mode === 'none'
        ? 'the split cannot batch (manifest batching: none): both configurations run one request per run.'
        : undefined;
    if (options.warmup) {
      for (const { cloud: c } of configurations) {
        for (const mode of modes) {
          const recs = replayed.get(mode)!;
          const shortest = recs.reduce((a, b) => (b.promptTokens < a.promptTokens ? b : a));
          await replaySession(shortest, { url: c.url, link: options.link, seed: 999 });
        }
      }
    }
    const runs: Array<{ order: number; stats: FleetRunStats }> = [];
    for (const [l, load] of options.loads.entries()) {
      for (const { m, c } of runOrder(modes.length, l)) {
        const mode = modes[m];
        const { cloud: target, maxBatch } = configurations[c];
        const label =
          `${mode}, --max-batch ${maxBatch}, ${describeLoad(load, options.devices)}, ` + `${options.durationS} s`;
        const progress = reporter.progress(`${label}: ${options.devices} EMULATED devices`);
        const before = await scrape(target);
        const cpuBefore = cpuSeconds(target.process.pid!);
        const run = await runLoad({
          url: target.url,
          recordings: replayed.get(mode)!,
          devices: options.devices,
          load,
          durationMs: options.durationS * 1000,
          drainMs: options.drainS * 1000,
          link: options.link,
          seed: options.seed,
          advice: mode === 'hat' ? advice : undefined,
          onSessionDone: (done) => progress.update(`${label}: ${done} sessions done`),
        });
        const cpuAfter = cpuSeconds(target.process.pid!);
        const after = await scrape(target);
        const stats = fleetRunStats(run, {
          mode,
          maxBatch,
          load,
          devices: options.devices,
          sloTtftMs: options.sloTtftMs,
          sloTbtMs: options.sloTbtMs,
          before,
          after,
          cpuSeconds: cpuBefore === undefined || cpuAfter === undefined ? null : cpuAfter - cpuBefore,
        });
        // Reported batching on first, then by mode, then by load.
        runs.push({ order: (c * modes.length + m) * options.loads.length + l, stats });
        progress.succeed(
          `${label}: ${stats.sessions.completed} sessions, ${stats.throughputTokensPerSecond} tokens/s` +
            (stats.sessions.failed ? `, ${stats.sessions.failed} FAILED` : ''),
        );
      }
    }
    if (batchingNote) notes.push(batchingNote);
    for (const { cloud: c, maxBatch } of configurations) {
      const admitted = loggedSessionLimit(c);
      if (admitted !== undefined && admitted < options.devices) {
        notes.push(
          `the --max-batch ${maxBatch} cloud admits ${admitted} sessions at once (its KV memory at a context of ` +
            `${sessionPositions} positions), fewer than the ${options.devices} devices: the others are refused ` +
            'with SESSION_LIMIT (raise serve-cloud --kv-memory, or run fewer devices)',
        );
      }
    }
    const ordered = runs.sort((a, b) => a.order - b.order).map((r) => r.stats);
    for (const r of ordered) {
      const what = `${r.mode}, --max-batch ${r.maxBatch}, ${describeLoad(r.load, r.devices)}`;
      if (r.sessions.failed) notes.push(`${what}: ${r.sessions.failed} session(s) failed: ${r.errors.join(' | ')}`);
      const errors = JSON.stringify(r.cloud.errors);
      if (errors !== '{}') notes.push(`${what}: the cloud sent error frames ${errors}`);
    }
    const late = Math.max(...ordered.map((r) => r.emulationLateMs.p99));
    if (late > 2) {
      notes.push(
        `EMULATED devices sent frames up to ${late.toFixed(1)} ms late (p99 over a run) against their ` +
          "recorded schedule: this process's timers and event loop were busy, which stretches device time in those " +
          'runs.',
      );
    }

    const loads = options.loads.map((l) => describeLoad(l, options.devices)).join(', ');
    return {
      header: {
        date: new Date().toISOString(),
        machine:
          `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${platform()} ${release()}, ` +
          `Node ${process.versions.node}; ${cores.description}`,
        model: describeModel(options.splitDir, manifest),
        split: options.splitDir,
        link: `${describeLink(options.link)} (each EMULATED device has its own, both directions)`,
        load:
          `${loads}; ${options.durationS} s window per run, sessions drain afterwards ` +
          `(at most ${options.drainS} s)`,
        prompts: given
          ? `${given.length} recorded sessions from ${options.recordingsDir} (prompts of ` +
            `${[...new Set(given.map((r) => r.promptTokens))].sort((a, b) => a - b).join(', ')} tokens, ` +
            `${Math.min(...given.map((r) => r.tokens))}–${Math.max(...given.map((r) => r.tokens))} tokens committed ` +
            'each, greedy)'
          : `${prompts.length} held-out prompts (${lengths.join(', ')} tokens; ${prompts[0].source}), ` +
            `${maxNewTokens} new tokens, greedy`,
        devices:
          `${options.devices} EMULATED devices in this process, each session its own WebSocket session and ` +
          'emulated link, replaying recorded sessions of real devices (frames as sent, device compute times, tokens ' +
          'committed per result)',
        slo: `TTFT ≤ ${options.sloTtftMs} ms and mean TBT ≤ ${options.sloTbtMs} ms per session`,
        batching:
          'a real serve-cloud process per configuration: batching on (--max-batch ' +
          `${configurations[0].maxBatch}${describeBudget(configurations[0], options.maxBatchTokens)}, ` +
          (configurations[0].mergedRows !== undefined
            ? `a prompt's queued chunks merged up to ${configurations[0].mergedRows} rows, `
            : '') +
          (configurations[0].minBatch !== undefined ? `--min-batch ${configurations[0].minBatch}, ` : '') +
          `--cost-rule ${options.costRule ? 'on' : 'off'}, ` +
          `--rows-advice ${rowsAdvice}) and ` +
          '--max-batch 1, live side by side, runs counterbalanced; both started ' +
          "with serve-cloud's glibc malloc settings (README)",
      },
      notes,
      recordings: summarizeRecordings([...replayed.values()].flat()),
      runs: ordered,
      recorded,
    };
  } finally {
    for (const entry of clouds) await entry.cloud?.stop();
    if (pinned && original) pinSelf(original);
  }
}

/**
 * The first recording in an earlier run's --out that this split cannot replay: one of another split, except the
 * trained model's hat sessions a random-weight run saved for its acceptance (they come from that other split).
 */
export function foreignRecording(
  recordings: readonly SessionRecording[],
  manifestHash: string,
): SessionRecording | undefined {
  return recordings.find((r) => r.manifestHash !== manifestHash && r.mode !== 'acceptance-hat');
}

/** Recorded hat sessions of a trained model, for a random-weight split's acceptance. */
async function acceptancePatterns(
  options: FleetOptions,
  available: readonly SessionRecording[],
  recordOptions: (splitDir: string, cloudUrl: string) => RecordOptions,
  startCloud: (splitDir: string, maxBatch: number | undefined) => Promise<SpawnedCloud>,
  reporter: Reporter,
): Promise<{ hat: SessionRecording[]; recorded: SessionRecording[]; source: string }> {
  const saved = available.filter((r) => r.mode === 'acceptance-hat');
  if (saved.length && !options.acceptanceFrom) {
    return { hat: saved, recorded: [], source: `(recordings of ${saved[0].manifestHash.slice(0, 12)})` };
  }
  const from = options.acceptanceFrom ?? DEFAULT_SPLIT;
  if (!existsSync(join(from, 'manifest.json'))) {
    const hat = readRecordings(from).filter((r) => r.mode === 'hat' || r.mode === 'acceptance-hat');
    if (!hat.length) throw new HatError('BAD_OPTION', `--acceptance-from ${from} holds no hat recordings`);
    return { hat, recorded: [], source: from };
  }
  const manifest = readManifest(from);
  if (!manifest.adapter || isRandomWeights(from, manifest)) {
    throw new HatError(
      'BAD_OPTION',
      `--acceptance-from ${from} must be a split with a trained adapter`,
      'the shipped fixtures/default-split is one',
    );
  }
  const { lengths } = clampLengths(from, options.promptLengths, options.maxNewTokens, options.maxDraft);
  const vocab = manifest.model?.vocabSize ?? 32;
  const prompts = promptsOfLengths(lengths, options.promptsPerLength, splitTokenizerIfAny(from), vocab);
  const startup = reporter.progress(`recording hat sessions of the trained model ${from} for the acceptance`);
  const cloud = await startCloud(from, undefined);
  try {
    const jobs = [{ mode: 'acceptance-hat', scenario: scenario('hat') }];
    const recorded = await recordSessions(recordOptions(from, cloud.url), jobs, prompts, (done, total, what) =>
      startup.update(`acceptance: ${what} (${done}/${total})`, done / total),
    );
    startup.succeed(`recorded ${recorded.length} hat sessions of ${from} (acceptance for the random-weight split)`);
    return { hat: recorded, recorded, source: from };
  } finally {
    await cloud.stop();
  }
}

/**
 * The runs of load `load` (its index), as mode and configuration indices (0: batching on, 1: --max-batch 1). Within a
 * load each mode runs both configurations, the second mode in the other order (on, off, off, on), so the process that
 * just ran goes straight on; odd loads run that block backwards. So across two loads each configuration of each mode
 * runs first once, and after its own process once and after the other's once, and each mode goes first once: drift
 * and a process's warmth from its last run hit batching on and off, hat and u-shape alike. (Until this order, every
 * load ran hat on, hat off, u-shape off, u-shape on: hat always ran batching on first and u-shape --max-batch 1 first.)
 */
export function runOrder(modes: number, load: number): Array<{ m: number; c: number }> {
  const block = Array.from({ length: modes }, (_, m) => (m % 2 === 0 ? [0, 1] : [1, 0]).map((c) => ({ m, c }))).flat();
  return load % 2 === 0 ? block : block.reverse();
}
