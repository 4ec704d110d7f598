/**
 * The one way every caller (run-device, demo, bench devices, scripts, tests) builds a device generator: a cloud
 * session (resumed across lost links when `reconnects` > 0, with the small model as the last resort when
 * `fallbackLocal`), a sampler, a draft policy and the Drafter over already-open device parts.
 */
import { HatError } from '../../errors.ts';
import type { SplitManifest } from '../../split/manifest.ts';
import type { ChunkPlanner } from '../chunk-planner.ts';
import { manifestHash } from '../split-dir.ts';
import { AutoDraftPolicy, FixedThresholdPolicy, type DraftPolicy } from '../speculative/draft-policy.ts';
import { createSampler } from '../speculative/sampler.ts';
import { CloudClient, type CloudClientOptions } from './cloud-client.ts';
import type { DeviceParts } from './device-parts.ts';
import { Drafter } from './drafter.ts';
import { HatGenerator } from './hat-generator.ts';
import { checkPlannerWire } from './prefill.ts';
import { LocalVerifier } from './local-verifier.ts';
import { connectWithRetries, ResumingVerifier, type ResumeEvent } from './resuming-verifier.ts';
import type { SessionRecorder } from './session-recorder.ts';
import type { Verifier } from './verifier.ts';

export interface DeviceGeneratorOptions {
  parts: DeviceParts;
  /** Where and how to reach serve-cloud; the split's hash and hidden size come from the parts' manifest. */
  cloud: Omit<CloudClientOptions, 'manifestHash' | 'hiddenSize'>;
  sampling: { temperature: number; topP: number; seed: number };
  /** 'auto', a fixed η, or a ready policy. */
  draftThreshold: 'auto' | number | DraftPolicy;
  maxDraft: number;
  /** New cloud sessions to try after a lost connection, each replaying the committed states (0: none). */
  reconnects?: number;
  backoff?: { firstMs: number; maxMs: number };
  /** When every reconnect fails, continue with the small model (needs the adapter). */
  fallbackLocal?: boolean;
  onResume?: (event: ResumeEvent) => void;
  /**
   * Records the session (`run-device --record`, the fleet benchmark): taps the uplink and wraps the verifier the
   * generator talks to. The caller reports commits (`recorder.committed`) from its onTokens.
   */
  recorder?: SessionRecorder;
  /**
   * The device's chunk planner (prefill.ts devicePlanner), for a device that opens many sessions: its link, speed
   * and cloud measurements carry over, so later prompts skip the probe chunks. A fresh one per session when absent.
   * One session at a time (HatDevice's request queue): the link estimate assumes no other session's chunks share it.
   */
  planner?: ChunkPlanner;
}

/** Greedy sampling (the setting every equivalence check and benchmark uses). */
export const GREEDY = { temperature: 0, topP: 1, seed: 0 } as const;

export interface DeviceGenerator {
  generator: HatGenerator;
  verifier: Verifier;
  /** The cloud's context limit in positions (its welcome), when it says. */
  cloudContext?: number;
  close(): void;
}

export function draftPolicy(manifest: SplitManifest, threshold: 'auto' | number, maxDraft: number): DraftPolicy {
  return threshold === 'auto'
    ? new AutoDraftPolicy(manifest.adapter?.defaultThreshold ?? 0.6, maxDraft)
    : new FixedThresholdPolicy(threshold, maxDraft);
}

export async function connectDeviceGenerator(options: DeviceGeneratorOptions): Promise<DeviceGenerator> {
  const { parts } = options;
  const { manifest } = parts;
  if (options.fallbackLocal && !parts.adapter) {
    throw new HatError(
      'BAD_OPTION',
      '--fallback local needs the adapter (the small model)',
      'run `hat train-adapter <split-dir>` first, or use --fallback none',
    );
  }
  if (options.planner) checkPlannerWire(options.planner, manifest, options.cloud.wire);
  const { recorder } = options;
  const tap = options.cloud.recordUplink;
  const recordUplink = recorder
    ? (bytes: Uint8Array) => {
        tap?.(bytes);
        recorder.onUplink(bytes);
      }
    : tap;
  let cloudContext: number | undefined;
  const connect = async () => {
    const client = await CloudClient.connect({
      ...options.cloud,
      recordUplink,
      manifestHash: manifestHash(manifest),
      hiddenSize: manifest.hidden.size,
    });
    cloudContext = client.maxContext;
    return client;
  };
  const first = await connectWithRetries({
    connect,
    reconnects: options.reconnects ?? 0,
    backoff: options.backoff,
    onEvent: options.onResume,
  });
  const resumable = (options.reconnects ?? 0) > 0 || options.fallbackLocal;
  const cloudVerifier: Verifier = resumable
    ? new ResumingVerifier(first, {
        connect,
        reconnects: options.reconnects ?? 0,
        backoff: options.backoff,
        onEvent: options.onResume,
        fallback: options.fallbackLocal ? async () => new LocalVerifier(parts.adapter!, options.cloud.wire) : undefined,
      })
    : first;
  const verifier = recorder ? recorder.wrap(cloudVerifier) : cloudVerifier;
  const sampler = createSampler(options.sampling);
  const policy =
    typeof options.draftThreshold === 'object'
      ? options.draftThreshold
      : draftPolicy(manifest, options.draftThreshold, options.maxDraft);
  const generator = new HatGenerator(parts, verifier, sampler, new Drafter(parts, sampler, policy), options.planner);
  return { generator, verifier, cloudContext, close: () => verifier.close() };
}
