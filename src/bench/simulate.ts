/**
 * SIMULATION (not a measurement): HAT's testbed replayed as a discrete-event model fed with costs measured on
 * this machine. 30 devices with Wi-Fi links (uplink 5–10 MB/s, downlink 10–15 MB/s, drawn per device), Poisson
 * arrivals at 4 and 6 requests/s, each request taken by an idle device; the device's compute is the measured
 * device cost × `deviceSlowdown` (device and cloud were measured on the same CPU). Decoding commits the measured
 * tokens per round; parallel drafting hides the next round's drafting behind the verification with the measured
 * hit rate.
 *
 * Three pieces are the real runtime's, driven in simulated time (`loop.now`) instead of performance.now():
 * - chunk sizes ('chunk-only', 'hat'): each device's own ChunkPlanner (runtime/chunk-planner.ts), kept across its
 *   requests, seeded with the cloud's g(X), fed the device's input-part time per chunk and every chunk's result
 *   (sent and answered at, the cloud's queue wait and compute time), with at most MAX_CHUNKS_IN_FLIGHT unanswered
 *   probes before the link is measured, as prefill.ts does; 'u-sarathi' sends fixed chunks, 'u-shape' and
 *   'u-spec' the whole prompt;
 * - links: one EmulatedDirection (runtime/link.ts) per device and direction, jitter 0, through its pure
 *   `delayFor(bytes, now)` — frames serialise FIFO at the link's bandwidth, then arrive one latency later;
 * - the cloud's batching: serve-cloud's scheduler (runtime/cloud/scheduler.ts `nextBatch`) over one FIFO queue
 *   (session = device): verifications first, never padded with prefill chunks, classes alternating, one request
 *   per session per run (a lone chunk joined by its device's next queued chunks, as serve-cloud's pool does), at
 *   most `maxBatch` sessions and `maxBatchTokens` padded rows (a joined chunk: up to MAX_MERGED_ROWS), real pasts
 *   filling at least MIN_PAST_FILL of the padded ones; a run takes g(padded rows) = g₀ + g₁·X (no attention-length
 *   term).
 */
import { ChunkPlanner, type ChunkResult } from '../runtime/chunk-planner.ts';
import {
  afterRun,
  DEFAULT_SMALL_ROWS,
  FIRST_TURN,
  nextBatch,
  type BatchLimits,
  type RequestClass,
  type Turn,
} from '../runtime/cloud/scheduler.ts';
import { DEFAULT_MAX_BATCH, DEFAULT_TOKENS_PER_THREAD } from '../runtime/cloud/worker-pool.ts';
import { summarize, type Summary } from '../runtime/device/metrics.ts';
import { MAX_CHUNKS_IN_FLIGHT } from '../runtime/device/prefill.ts';
import { EmulatedDirection } from '../runtime/link.ts';
import { seededUniform } from '../runtime/sampling.ts';
import type { StageCosts } from './calibrate.ts';
import { EventLoop } from './event-loop.ts';

export interface Acceptance {
  tokensPerRound: number;
  /** Hidden rows uploaded per verification (pending token + drafts). */
  rowsPerRound: number;
  parallelHitRate: number;
}

export interface SimulationConfig {
  costs: StageCosts;
  acceptance: Acceptance;
  deviceSlowdown: number;
  devices: number;
  rates: number[];
  requests: number;
  maxNewTokens: number;
  meanPromptTokens: number;
  uplinkMBs: [number, number];
  downlinkMBs: [number, number];
  oneWayLatencyMs: number;
  sarathiChunk: number;
  /** The cloud's frame limit; the ChunkPlanner's largest chunk, as on a real device. */
  maxTokensPerFrame: number;
  /** serve-cloud's --max-batch: sessions per run. */
  maxBatch: number;
  /** serve-cloud's --max-batch-tokens: padded rows (sessions × the longest request) per run. */
  maxBatchTokens: number;
  seed: number;
}

export type SimulatedScenario = 'u-shape' | 'u-sarathi' | 'u-spec' | 'chunk-only' | 'hat';
export const SIMULATED_SCENARIOS: SimulatedScenario[] = ['u-shape', 'u-sarathi', 'u-spec', 'chunk-only', 'hat'];

export interface SimulatedResult {
  scenario: SimulatedScenario;
  rate: number;
  ttftMs: Summary;
  tbtMs: Summary;
  tokensPerSecond: number;
  /** Share of the simulated time the cloud was computing; near 1 means overloaded (queues grow, figures run away). */
  cloudBusyShare: number;
}

/** One call a simulated device made on its ChunkPlanner, in order. */
export type PlannerCall =
  | { call: 'seed'; latency: { baseMs: number; perTokenMs: number } }
  | { call: 'observeDevice'; tokens: number; ms: number }
  | { call: 'observeResult'; result: ChunkResult }
  | { call: 'next'; remaining: number; size: number };

/** One run of the simulated cloud. */
export interface SimulatedBatch {
  startedAt: number;
  kind: RequestClass;
  paddedRows: number;
  computeMs: number;
  /** waitedMs: how long the request was queued when the run started (a joined chunk's rows count with its head's). */
  requests: Array<{ device: number; rows: number; past: number; origin: 'prefill' | 'verification'; waitedMs: number }>;
}

/** Optional hooks into a simulation, for tests and traces; they do not change what it computes. */
export interface SimulationObserver {
  planner?(device: number, call: PlannerCall): void;
  /** Every prompt chunk a device computes and sends, in every scenario. */
  chunk?(device: number, size: number, remaining: number): void;
  batch?(batch: SimulatedBatch): void;
}

/**
 * The HAT paper's testbed (hat-method.md §9) and SpecBench's mean prompt length. The cloud's limits: serve-cloud's
 * --max-batch DEFAULT_MAX_BATCH; --max-batch-tokens DEFAULT_TOKENS_PER_THREAD × the intra-op threads per worker of
 * the serve-cloud whose g(X) was measured (`cloudThreads`) — serve-cloud's fallback, where a real one measures its
 * knee at start (batch-knee.ts; 32 rows for the default split on one core, the same); and serve-cloud's
 * default frame limit, 4096 tokens (--max-tokens-per-frame), as the chunk planner's largest chunk.
 */
export function paperTestbed(
  costs: StageCosts,
  acceptance: Acceptance,
  deviceSlowdown: number,
  cloudThreads = 1,
): SimulationConfig {
  return {
    costs,
    acceptance,
    deviceSlowdown,
    devices: 30,
    rates: [4, 6],
    requests: 240,
    maxNewTokens: 128,
    meanPromptTokens: 351,
    uplinkMBs: [5, 10],
    downlinkMBs: [10, 15],
    oneWayLatencyMs: 3,
    sarathiChunk: 64,
    maxTokensPerFrame: 4096,
    maxBatch: DEFAULT_MAX_BATCH,
    maxBatchTokens: DEFAULT_TOKENS_PER_THREAD * Math.max(1, cloudThreads),
    seed: 1,
  };
}

interface Item {
  sessionId: number;
  rows: number;
  /** Positions the session has cached in the cloud before this request (the scheduler's past-fill rule). */
  past: number;
  origin: 'prefill' | 'verification';
  queuedAt: number;
  done: (timing: { queueMs: number; computeMs: number }) => void;
}

/** One cloud worker: serve-cloud's scheduler picks each run from the queue whenever the worker is free. */
class Cloud {
  private queue: Item[] = [];
  private busy = false;
  private turn: Turn = FIRST_TURN;
  private readonly limits: BatchLimits;
  busyMs = 0;

  constructor(
    private readonly loop: EventLoop,
    private readonly config: SimulationConfig,
    private readonly observer?: SimulationObserver,
  ) {
    // batchableRows Infinity: a 'padded' split, where requests of any length batch.
    this.limits = {
      maxBatch: config.maxBatch,
      maxBatchTokens: config.maxBatchTokens,
      smallRows: DEFAULT_SMALL_ROWS,
      batchableRows: Infinity,
    };
  }

  /** The latency model the cloud reports with every result. */
  get latency(): { baseMs: number; perTokenMs: number } {
    return { baseMs: this.config.costs.cloud.baseMs, perTokenMs: this.config.costs.cloud.perTokenMs };
  }

  g(rows: number): number {
    return this.config.costs.cloud.baseMs + this.config.costs.cloud.perTokenMs * rows;
  }

  submit(
    request: Pick<Item, 'sessionId' | 'rows' | 'past' | 'origin'>,
  ): Promise<{ queueMs: number; computeMs: number }> {
    return new Promise((done) => {
      this.queue.push({ ...request, queuedAt: this.loop.now, done });
      void this.serve();
    });
  }

  private async serve(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    for (;;) {
      // Queue times as serve-cloud's pool passes them: prompt chunks age (scheduler.ts CHUNK_AGING_MS).
      const queued = this.queue.map((item) => ({ ...item, waitedMs: this.loop.now - item.queuedAt }));
      const pick = nextBatch(queued, this.limits, this.turn);
      if (!pick) break;
      const chosen = new Set([...pick.indices, ...(pick.follow ?? [])]);
      const batch = pick.indices.map((i) => this.queue[i]);
      // A lone chunk's device's next chunks run with it as one request, as serve-cloud's pool joins them.
      const joined = (pick.follow ?? []).map((i) => this.queue[i]);
      const joinedRows = joined.reduce((n, item) => n + item.rows, 0);
      this.queue = this.queue.filter((_, i) => !chosen.has(i));
      const startedAt = this.loop.now;
      const computeMs = this.g(pick.paddedRows);
      this.turn = afterRun(this.turn, pick, computeMs);
      this.observer?.batch?.({
        startedAt,
        kind: pick.kind,
        paddedRows: pick.paddedRows,
        computeMs,
        requests: batch.map((item) => ({
          device: item.sessionId,
          rows: item.rows + (item === batch[0] ? joinedRows : 0),
          past: item.past,
          origin: item.origin,
          waitedMs: startedAt - item.queuedAt,
        })),
      });
      this.busyMs += computeMs;
      await this.loop.sleep(computeMs);
      for (const item of [...batch, ...joined]) item.done({ queueMs: startedAt - item.queuedAt, computeMs });
    }
    this.busy = false;
  }
}

class Device {
  busy = false;
  private computeFreeAt = 0;
  readonly up: EmulatedDirection;
  readonly down: EmulatedDirection;
  /** The device's own planner, kept across its requests as a device process keeps its own (devicePlanner). */
  readonly planner: ChunkPlanner;

  constructor(
    private readonly loop: EventLoop,
    readonly index: number,
    link: { upBytesPerS: number; downBytesPerS: number; latencyMs: number },
    config: SimulationConfig,
    cloud: Cloud,
    private readonly observer?: SimulationObserver,
  ) {
    this.up = new EmulatedDirection({ bandwidth: link.upBytesPerS, latencyMs: link.latencyMs, jitterMs: 0 });
    this.down = new EmulatedDirection({ bandwidth: link.downBytesPerS, latencyMs: link.latencyMs, jitterMs: 0 });
    this.planner = new ChunkPlanner({
      bytesPerToken: config.costs.bytesPerToken,
      maxChunk: Math.max(16, config.maxTokensPerFrame),
    });
    this.seed(cloud.latency);
  }

  compute(ms: number): Promise<void> {
    this.computeFreeAt = Math.max(this.loop.now, this.computeFreeAt) + ms;
    return this.loop.until(this.computeFreeAt);
  }

  /** Resolves when a frame of `bytes` sent now would have arrived over `direction`. */
  send(direction: EmulatedDirection, bytes: number): Promise<void> {
    return this.loop.until(this.loop.now + direction.delayFor(bytes, this.loop.now));
  }

  seed(latency: { baseMs: number; perTokenMs: number }): void {
    this.planner.seed(latency);
    this.observer?.planner?.(this.index, { call: 'seed', latency });
  }

  observeDevice(tokens: number, ms: number): void {
    this.planner.observeDevice(tokens, ms);
    this.observer?.planner?.(this.index, { call: 'observeDevice', tokens, ms });
  }

  observeResult(result: ChunkResult): void {
    this.planner.observeResult(result);
    this.observer?.planner?.(this.index, { call: 'observeResult', result });
  }

  nextChunk(remaining: number): number {
    const size = this.planner.next(remaining);
    this.observer?.planner?.(this.index, { call: 'next', remaining, size });
    return size;
  }
}

async function serveRequest(
  scenario: SimulatedScenario,
  promptTokens: number,
  device: Device,
  cloud: Cloud,
  loop: EventLoop,
  config: SimulationConfig,
  random: () => number,
  observer?: SimulationObserver,
): Promise<{ ttftMs: number; gaps: number[] }> {
  const { costs, acceptance, deviceSlowdown: F } = config;
  const A = costs.bytesPerToken,
    H = costs.frameHeaderBytes;
  const inputStep = costs.deviceInputMsPerToken * F;
  const outputStep = Math.max(0, costs.deviceDecodeStepMs - costs.deviceInputMsPerToken) * F;
  const draftStep = (costs.draftStepMs ?? costs.deviceDecodeStepMs) * F;
  const started = loop.now;

  // Chunked prefill as prefill.ts runs it: size, compute the input part, send; results are observed as they come.
  const planned = scenario === 'hat' || scenario === 'chunk-only';
  const inFlight: Array<Promise<void>> = [];
  let answered = 0;
  for (let offset = 0; offset < promptTokens;) {
    if (planned && !device.planner.measured && inFlight.length - answered >= MAX_CHUNKS_IN_FLIGHT) {
      await inFlight[answered];
    }
    const remaining = promptTokens - offset;
    const size =
      scenario === 'u-sarathi'
        ? Math.min(config.sarathiChunk, remaining)
        : planned
          ? device.nextChunk(remaining)
          : remaining;
    observer?.chunk?.(device.index, size, remaining);
    const deviceMs = size * inputStep;
    await device.compute(deviceMs);
    if (planned) device.observeDevice(size, deviceMs);
    const sentAt = loop.now;
    const bytesUp = size * A + H;
    const past = offset;
    const uploaded = device.send(device.up, bytesUp);
    inFlight.push(
      (async () => {
        await uploaded;
        const { queueMs, computeMs } = await cloud.submit({
          sessionId: device.index,
          rows: size,
          past,
          origin: 'prefill',
        });
        await device.send(device.down, A + H);
        if (planned) {
          device.observeResult({ bytesUp, sentAt, resultAt: loop.now, queueMs, computeMs, latency: cloud.latency });
        }
        answered++;
      })(),
    );
    offset += size;
  }
  await Promise.all(inFlight);
  await device.compute(outputStep);
  const ttftMs = loop.now - started;

  const speculative = scenario === 'u-spec' || scenario === 'hat';
  const gaps: number[] = [];
  let generated = 1;
  let last = loop.now;
  let overlapMs = 0;
  while (generated < config.maxNewTokens) {
    const rows = speculative ? Math.max(1, Math.round(acceptance.rowsPerRound)) : 1;
    const drafting = inputStep + (rows - 1) * draftStep;
    await device.compute(Math.max(0, drafting - overlapMs));
    const sent = loop.now;
    await device.send(device.up, rows * A + H);
    // The cloud has cached the prompt and every committed token but the pending one, which this round uploads.
    await cloud.submit({ sessionId: device.index, rows, past: promptTokens + generated - 1, origin: 'verification' });
    await device.send(device.down, rows * A + H);
    const verifyMs = loop.now - sent;
    await device.compute(outputStep * rows);
    const expected = speculative ? acceptance.tokensPerRound : 1;
    const committed = Math.min(
      config.maxNewTokens - generated,
      Math.floor(expected) + (random() < expected - Math.floor(expected) ? 1 : 0),
    );
    overlapMs = scenario === 'hat' && random() < acceptance.parallelHitRate ? verifyMs : 0;
    generated += committed;
    for (let i = 0; i < committed; i++) gaps.push((loop.now - last) / committed);
    last = loop.now;
  }
  return { ttftMs, gaps };
}

/** One scenario at one rate: Poisson arrivals, an idle device takes each request; the first 10 % are warm-up. */
export async function simulateScenario(
  scenario: SimulatedScenario,
  rate: number,
  config: SimulationConfig,
  observer?: SimulationObserver,
): Promise<SimulatedResult> {
  const loop = new EventLoop();
  const random = seededUniform(config.seed);
  const cloud = new Cloud(loop, config, observer);
  const between = (lo: number, hi: number) => lo + (hi - lo) * random();
  const devices = Array.from({ length: config.devices }, (_, index) => {
    const upBytesPerS = between(...config.uplinkMBs) * 1e6;
    const downBytesPerS = between(...config.downlinkMBs) * 1e6;
    const link = { upBytesPerS, downBytesPerS, latencyMs: config.oneWayLatencyMs };
    return new Device(loop, index, link, config, cloud, observer);
  });
  const waiting: Array<() => void> = [];
  const results: Array<{ ttftMs: number; gaps: number[]; finishedAt: number }> = [];
  const warmup = Math.floor(config.requests / 10);
  let firstMeasured = 0;

  const request = async (index: number, arrival: number, promptTokens: number) => {
    await loop.until(arrival);
    let device = devices.find((d) => !d.busy);
    while (!device) {
      await new Promise<void>((resolve) => waiting.push(resolve));
      device = devices.find((d) => !d.busy);
    }
    device.busy = true;
    if (index === warmup) firstMeasured = loop.now;
    const outcome = await serveRequest(scenario, promptTokens, device, cloud, loop, config, random, observer);
    device.busy = false;
    waiting.shift()?.();
    if (index >= warmup) results.push({ ...outcome, finishedAt: loop.now });
  };

  let t = 0;
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < config.requests; i++) {
    t += -Math.log(1 - random()) * (1000 / rate);
    const promptTokens = Math.max(
      16,
      Math.min(4 * config.meanPromptTokens, Math.round(-Math.log(1 - random()) * config.meanPromptTokens)),
    );
    all.push(request(i, t, promptTokens));
  }
  await loop.run();
  await Promise.all(all);
  const tokens = results.reduce((s, r) => s + r.gaps.length + 1, 0);
  const span = Math.max(...results.map((r) => r.finishedAt)) - firstMeasured;
  return {
    scenario,
    rate,
    ttftMs: summarize(results.map((r) => r.ttftMs)),
    tbtMs: summarize(results.flatMap((r) => r.gaps)),
    tokensPerSecond: Number((tokens / (span / 1000)).toFixed(1)),
    cloudBusyShare: Number(Math.min(1, cloud.busyMs / loop.now).toFixed(3)),
  };
}

export async function simulateTestbed(config: SimulationConfig): Promise<SimulatedResult[]> {
  const out: SimulatedResult[] = [];
  for (const rate of config.rates)
    for (const scenario of SIMULATED_SCENARIOS) out.push(await simulateScenario(scenario, rate, config));
  return out;
}
