/**
 * One benchmark device: holds the device parts (and, for device-only, the full model), runs one request of any
 * scenario and returns its RequestRecord. Each request opens a fresh cloud session, as `hat run-device` does.
 */
import WebSocket from 'ws';
import { codeOf, errorFromData, HatError, type ErrorData } from '../errors.ts';
import { EmulatedLink, type LinkSpec } from '../runtime/link.ts';
import type { WireDTypeName } from '../runtime/protocol/frame.ts';
import { wireBytesPerRow } from '../runtime/protocol/hidden-codec.ts';
import { readManifest } from '../runtime/split-dir.ts';
import { openDeviceParts, type DeviceParts } from '../runtime/device/device-parts.ts';
import { connectDeviceGenerator } from '../runtime/device/device-generator.ts';
import { devicePlanner } from '../runtime/device/prefill.ts';
import type { ChunkPlanner } from '../runtime/chunk-planner.ts';
import type { SplitManifest } from '../split/manifest.ts';
import { ComposedModel } from '../runtime/composed-model.ts';
import { generateGreedy } from './full-model.ts';
import { tokenGaps, type RequestRecord } from './record.ts';
import type { Scenario } from './scenarios.ts';
import type { BenchPrompt } from './prompts.ts';
import { measureStageCosts, type StageCosts } from './calibrate.ts';
import type { SessionRecorder } from '../runtime/device/session-recorder.ts';

export interface DeviceConfig {
  splitDir: string;
  cloudUrl: string;
  textCloudUrl?: string;
  link: LinkSpec;
  wire: WireDTypeName;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  /** Candidates parallel drafting branches on. */
  parallelBranches: number;
  threads?: number;
  /** Seeds this device's emulated link jitter. */
  seed: number;
}

type Arrival = { at: number; count: number };

/** Per request: record the session (the fleet benchmark), or draft with another threshold than the device's. */
export interface RunExtras {
  recorder?: SessionRecorder;
  draftThreshold?: 'auto' | number;
}

function emptyRecord(scenario: string, prompt: BenchPrompt): RequestRecord {
  return {
    scenario,
    promptTokens: prompt.ids.length,
    tokens: 0,
    ttftMs: 0,
    gapsMs: [],
    rounds: 0,
    bytesUp: 0,
    bytesDown: 0,
    cloudComputeMs: 0,
    cloudQueueMs: 0,
    prefillDeviceMs: 0,
    prefillBytesUp: 0,
    decodeRowsUp: 0,
    chunkSizes: [],
    parallelDrafting: { branches: 0, hits: 0 },
    startedAt: Date.now(),
    durationMs: 0,
    waitMs: 0,
  };
}

export class DeviceRunner {
  private fullModel?: ComposedModel;
  private requests = 0;
  /** This device's chunk planner, kept across its sessions as a device process keeps it (HatDevice). */
  private readonly planner: ChunkPlanner;

  private constructor(
    readonly config: DeviceConfig,
    readonly manifest: SplitManifest,
    private readonly parts: DeviceParts,
  ) {
    this.planner = devicePlanner(manifest, config.wire);
  }

  static async open(config: DeviceConfig): Promise<DeviceRunner> {
    const manifest = readManifest(config.splitDir);
    const withAdapter = manifest.adapter !== undefined;
    const parts = await openDeviceParts(config.splitDir, manifest, { withAdapter, threads: config.threads });
    return new DeviceRunner(config, manifest, parts);
  }

  get hasAdapter(): boolean {
    return this.parts.adapter !== undefined;
  }

  async run(
    scenario: Scenario,
    prompt: BenchPrompt,
    maxNewTokens: number,
    extras: RunExtras = {},
  ): Promise<RequestRecord> {
    this.requests++;
    if (scenario.kind === 'split') return this.runSplit(scenario, prompt, maxNewTokens, extras);
    if (scenario.kind === 'cloud-only') return this.runCloudOnly(scenario, prompt, maxNewTokens);
    return this.runDeviceOnly(scenario, prompt, maxNewTokens);
  }

  /** Per-stage costs on this device and the cloud's g(X), for --simulate. */
  async calibrate(): Promise<StageCosts> {
    this.resetParts();
    try {
      return await measureStageCosts(this.parts, this.config);
    } finally {
      this.resetParts();
    }
  }

  private resetParts(): void {
    for (const part of [this.parts.input, this.parts.output, this.parts.draftOutput, this.parts.adapter])
      part?.truncate(0);
  }

  private async runSplit(
    scenario: Scenario,
    prompt: BenchPrompt,
    maxNewTokens: number,
    extras: RunExtras,
  ): Promise<RequestRecord> {
    if (scenario.speculative && !this.parts.adapter) {
      throw new HatError(
        'BAD_MANIFEST',
        `scenario ${scenario.name} drafts, and the split has no adapter`,
        'run `hat train-adapter <split-dir>` first, ' +
          'or pick scenarios without drafts (--scenarios u-shape,u-sarathi,chunk-only,cloud-only,device-only)',
      );
    }
    // The generation clears the parts' caches itself (HatGenerator), whatever the last request left.
    const { config, manifest } = this;
    // Without drafts the device holds no adapter, as `hat run-device --no-draft` (its prefill skips the adapter too).
    const parts = scenario.speculative ? this.parts : { ...this.parts, adapter: undefined };
    const device = await connectDeviceGenerator({
      parts,
      cloud: { url: config.cloudUrl, wire: config.wire, link: { ...config.link } }, // a fresh link state per session
      sampling: { temperature: 0, topP: 1, seed: 0 },
      draftThreshold: extras.draftThreshold ?? config.draftThreshold,
      maxDraft: config.maxDraft,
      recorder: extras.recorder,
      planner: this.planner,
    });
    const record = emptyRecord(scenario.name, prompt);
    const arrivals: Arrival[] = [];
    const started = performance.now();
    try {
      const { ids, metrics, error } = await device.generator.generate(prompt.ids, {
        maxNewTokens,
        speculative: scenario.speculative,
        parallelDrafting: scenario.parallelDrafting,
        parallelBranches: this.config.parallelBranches,
        chunk: scenario.chunk,
        onTokens: (ids) => {
          arrivals.push({ at: performance.now(), count: ids.length });
          extras.recorder?.committed(ids.length);
        },
      });
      const prefillBytes = metrics.prefillChunks.reduce((s, c) => s + c.bytesUp, 0);
      const rowBytes = wireBytesPerRow(config.wire, manifest.hidden.size);
      Object.assign(record, {
        tokens: ids.length,
        ttftMs: metrics.ttftMs,
        gapsMs: tokenGaps(arrivals),
        rounds: metrics.rounds,
        bytesUp: metrics.bytesUp,
        bytesDown: metrics.bytesDown,
        cloudComputeMs: metrics.cloudComputeMs,
        cloudQueueMs: metrics.cloudQueueMs,
        prefillDeviceMs: metrics.prefillChunks.reduce((s, c) => s + c.deviceMs, 0),
        prefillBytesUp: prefillBytes,
        decodeRowsUp: Math.round((metrics.bytesUp - prefillBytes - 52 * metrics.rounds) / rowBytes),
        chunkSizes: metrics.chunkSizes,
        parallelDrafting: metrics.parallelDrafting,
        error: error?.message,
        errorCode: error ? codeOf(error, 'INTERNAL') : undefined,
      });
    } finally {
      device.close();
    }
    record.durationMs = performance.now() - started;
    return record;
  }

  private async runDeviceOnly(scenario: Scenario, prompt: BenchPrompt, maxNewTokens: number): Promise<RequestRecord> {
    this.fullModel ??= await ComposedModel.open(this.config.splitDir, this.manifest, { threads: this.config.threads });
    const record = emptyRecord(scenario.name, prompt);
    const arrivals: Arrival[] = [];
    const started = performance.now();
    await generateGreedy(this.fullModel, prompt.ids, maxNewTokens, () =>
      arrivals.push({ at: performance.now(), count: 1 }),
    );
    return this.fromArrivals(record, arrivals, started);
  }

  /**
   * The prompt goes up as text (token ids without a tokenizer) and tokens come down, both through the emulated
   * link.
   */
  private async runCloudOnly(scenario: Scenario, prompt: BenchPrompt, maxNewTokens: number): Promise<RequestRecord> {
    if (!this.config.textCloudUrl) throw new HatError('INTERNAL', 'cloud-only needs the text cloud');
    const link = new EmulatedLink(this.config.link, this.config.seed * 7919 + this.requests);
    const record = emptyRecord(scenario.name, prompt);
    const arrivals: Arrival[] = [];
    const started = performance.now();
    const socket = new WebSocket(this.config.textCloudUrl, { perMessageDeflate: false });
    socket.on('error', () => {}); // a broken connection is reported by 'close' below, or by the connect
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('open', resolve);
        socket.once('error', (error) =>
          reject(new HatError('NETWORK', `cannot reach the cloud-only server: ${error.message}`)),
        );
      });
      await new Promise<void>((resolve, reject) => {
        socket.on('message', (data: Buffer) => {
          record.bytesDown += data.length;
          link.down.send(data.length, () => {
            const reply = JSON.parse(data.toString('utf8')) as { token?: number; error?: ErrorData };
            if (reply.error) return reject(errorFromData(reply.error, 'NETWORK', 'cloud-only server: '));
            arrivals.push({ at: performance.now(), count: 1 });
            if (arrivals.length === maxNewTokens) resolve();
          });
        });
        socket.once('close', () => reject(new HatError('NETWORK', 'the cloud-only server closed the connection')));
        const message = JSON.stringify(
          prompt.text === undefined
            ? { prompt: prompt.ids, maxNewTokens }
            : { prompt: prompt.text, addSpecialTokens: prompt.textAddsSpecialTokens, maxNewTokens },
        );
        record.bytesUp = Buffer.byteLength(message);
        link.up.send(record.bytesUp, () => socket.send(message));
      });
    } catch (error) {
      // As the split scenarios do: a failed request is recorded (and counted a miss), the run goes on.
      record.error = (error as Error).message;
      record.errorCode = codeOf(error, 'INTERNAL');
    } finally {
      socket.removeAllListeners('close');
      socket.close();
    }
    return this.fromArrivals(record, arrivals, started);
  }

  private fromArrivals(record: RequestRecord, arrivals: Arrival[], started: number): RequestRecord {
    record.tokens = arrivals.length;
    record.rounds = Math.max(0, arrivals.length - 1); // one token per step
    record.ttftMs = arrivals.length ? arrivals[0].at - started : 0;
    record.gapsMs = tokenGaps(arrivals);
    record.durationMs = performance.now() - started;
    return record;
  }
}
