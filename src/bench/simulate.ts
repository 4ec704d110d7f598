/**
 * SIMULATION (not a measurement): HAT's testbed replayed as a discrete-event model fed with costs measured on
 * this machine. 30 devices with Wi-Fi links (uplink 5–10 MB/s, downlink 10–15 MB/s, drawn per device), Poisson
 * arrivals at 4 and 6 requests/s, each request taken by an idle device; the device's compute is the measured
 * device cost × `deviceSlowdown` (device and cloud were measured on the same CPU); the cloud runs iteration-level
 * batches — every queued item (prompt chunk or verification) up to a token budget — in g(X) = g₀ + g₁·X.
 * Decoding commits the measured tokens per round; parallel drafting hides the next round's drafting behind the
 * verification with the measured hit rate.
 */
import { summarize, type Summary } from '../runtime/device/metrics.ts';
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
  cloudTokenBudget: number;
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

/** The HAT paper's testbed (hat-method.md §9) and SpecBench's mean prompt length. */
export function paperTestbed(costs: StageCosts, acceptance: Acceptance, deviceSlowdown: number): SimulationConfig {
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
    cloudTokenBudget: 2048,
    seed: 1,
  };
}

interface Item {
  tokens: number;
  queuedAt: number;
  done: () => void;
}

class Cloud {
  private queue: Item[] = [];
  private busy = false;
  /** EMA of queue waits (HAT's W). */
  waitEstimateMs = 0;
  busyMs = 0;

  constructor(
    private readonly loop: EventLoop,
    private readonly config: SimulationConfig,
  ) {}

  g(tokens: number): number {
    return this.config.costs.cloud.baseMs + this.config.costs.cloud.perTokenMs * tokens;
  }

  submit(tokens: number): Promise<void> {
    return new Promise((done) => {
      this.queue.push({ tokens, queuedAt: this.loop.now, done });
      void this.serve();
    });
  }

  private async serve(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    while (this.queue.length) {
      const batch: Item[] = [this.queue.shift()!];
      let tokens = batch[0].tokens;
      while (this.queue.length && tokens + this.queue[0].tokens <= this.config.cloudTokenBudget) {
        tokens += this.queue[0].tokens;
        batch.push(this.queue.shift()!);
      }
      for (const item of batch) this.waitEstimateMs = 0.8 * this.waitEstimateMs + 0.2 * (this.loop.now - item.queuedAt);
      this.busyMs += this.g(tokens);
      await this.loop.sleep(this.g(tokens));
      for (const item of batch) item.done();
    }
    this.busy = false;
  }
}

class Device {
  busy = false;
  private computeFreeAt = 0;
  private upFreeAt = 0;
  private downFreeAt = 0;

  constructor(
    private readonly loop: EventLoop,
    readonly upBytesPerMs: number,
    readonly downBytesPerMs: number,
    private readonly latencyMs: number,
  ) {}

  compute(ms: number): Promise<void> {
    this.computeFreeAt = Math.max(this.loop.now, this.computeFreeAt) + ms;
    return this.loop.until(this.computeFreeAt);
  }

  private transfer(bytes: number, direction: 'up' | 'down'): Promise<void> {
    const rate = direction === 'up' ? this.upBytesPerMs : this.downBytesPerMs;
    const leaves = Math.max(this.loop.now, direction === 'up' ? this.upFreeAt : this.downFreeAt) + bytes / rate;
    if (direction === 'up') this.upFreeAt = leaves;
    else this.downFreeAt = leaves;
    return this.loop.until(leaves + this.latencyMs);
  }

  up(bytes: number): Promise<void> {
    return this.transfer(bytes, 'up');
  }
  down(bytes: number): Promise<void> {
    return this.transfer(bytes, 'down');
  }
}

/**
 * HAT's chunk rule X·A/β = W + g(X) (P = 1), bounded to [16, remaining]; the whole rest when uploading is never
 * the bottleneck.
 */
export function hatChunk(
  remaining: number,
  bytesPerToken: number,
  upBytesPerMs: number,
  waitMs: number,
  cloud: { baseMs: number; perTokenMs: number },
): number {
  const perToken = bytesPerToken / upBytesPerMs - cloud.perTokenMs;
  if (perToken <= 0) return remaining;
  const x = Math.round((waitMs + cloud.baseMs) / perToken);
  const size = Math.min(remaining, Math.max(16, x));
  return remaining - size < 16 ? remaining : size;
}

async function serveRequest(
  scenario: SimulatedScenario,
  promptTokens: number,
  device: Device,
  cloud: Cloud,
  loop: EventLoop,
  config: SimulationConfig,
  random: () => number,
): Promise<{ ttftMs: number; gaps: number[] }> {
  const { costs, acceptance, deviceSlowdown: F } = config;
  const A = costs.bytesPerToken,
    H = costs.frameHeaderBytes;
  const inputStep = costs.deviceInputMsPerToken * F;
  const outputStep = Math.max(0, costs.deviceDecodeStepMs - costs.deviceInputMsPerToken) * F;
  const draftStep = (costs.draftStepMs ?? costs.deviceDecodeStepMs) * F;
  const started = loop.now;

  const inFlight: Array<Promise<void>> = [];
  for (let offset = 0; offset < promptTokens;) {
    const remaining = promptTokens - offset;
    const size =
      scenario === 'u-sarathi'
        ? Math.min(config.sarathiChunk, remaining)
        : scenario === 'hat' || scenario === 'chunk-only'
          ? hatChunk(remaining, A, device.upBytesPerMs, cloud.waitEstimateMs, costs.cloud)
          : remaining;
    await device.compute(size * inputStep);
    inFlight.push(
      device
        .up(size * A + H)
        .then(() => cloud.submit(size))
        .then(() => device.down(A + H)),
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
    await device.up(rows * A + H);
    await cloud.submit(rows);
    await device.down(rows * A + H);
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
): Promise<SimulatedResult> {
  const loop = new EventLoop();
  const random = seededUniform(config.seed);
  const cloud = new Cloud(loop, config);
  const between = (lo: number, hi: number) => lo + (hi - lo) * random();
  const devices = Array.from(
    { length: config.devices },
    () =>
      new Device(
        loop,
        between(...config.uplinkMBs) * 1000,
        between(...config.downlinkMBs) * 1000,
        config.oneWayLatencyMs,
      ),
  );
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
    const outcome = await serveRequest(scenario, promptTokens, device, cloud, loop, config, random);
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
