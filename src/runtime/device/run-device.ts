/**
 * run-device's core: open the device's parts and tokenizer, connect to the cloud, generate with HAT and stream
 * the text. Works from a device bundle (input, output, adapter, manifest, tokenizer) — no middle part needed.
 */
import type { LinkSpec } from '../link.ts';
import type { WireDTypeName } from '../protocol/frame.ts';
import { readManifest, splitSpecialIds, splitTokenizer } from '../split-dir.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promptIds as resolvePromptIds, stopTokenIds, type PromptInput } from '../prompt.ts';
import { continuationText, textStreamer } from '../tokenizer.ts';
import { budgetWithinCloudContext } from './cloud-context.ts';
import { openDeviceParts } from './device-parts.ts';
import { connectDeviceGenerator } from './device-generator.ts';
import type { HatGeneration } from './hat-generator.ts';
import type { ResumeEvent } from './resuming-verifier.ts';
import { assertRecordingTarget, SessionRecorder, writeRecording } from './session-recorder.ts';
import { describeLink } from '../link.ts';
import { manifestHash } from '../split-dir.ts';

export interface RunDeviceOptions {
  splitDir: string;
  cloud: string;
  /** Text, or `{ ids }` for a model without a tokenizer (`--prompt-ids`). */
  prompt: string | PromptInput;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  /** Draft with the adapter at all (false: U-shape, one round trip per token). */
  speculative: boolean;
  parallelDrafting: boolean;
  parallelBranches: number;
  chunk: 'auto' | 'off' | number;
  wire: WireDTypeName;
  link?: LinkSpec;
  token?: string;
  /** After every reconnect fails: continue with the small model. */
  fallbackLocal: boolean;
  /** New cloud sessions to try when the connection drops (each replays the committed states). */
  reconnects?: number;
  onResume?: (event: ResumeEvent) => void;
  threads?: number;
  onText?: (text: string) => void;
  recordUplink?: (bytes: Uint8Array) => void;
  /** Writes the session's recording here (src/runtime/device/session-recorder.ts): frames, timing, results. */
  record?: string;
}

export interface RunDeviceResult extends HatGeneration {
  promptIds: number[];
  /** Undefined when the bundle has no tokenizer (ids only). */
  text?: string;
}

export async function runDevice(options: RunDeviceOptions): Promise<RunDeviceResult> {
  const manifest = readManifest(options.splitDir);
  const hasTokenizer = existsSync(join(options.splitDir, manifest.tokenizer ?? 'tokenizer.json'));
  const tokenizer =
    hasTokenizer || typeof options.prompt === 'string' ? splitTokenizer(options.splitDir, manifest) : undefined;
  const special = splitSpecialIds(options.splitDir, manifest);
  const prompt = typeof options.prompt === 'string' ? { text: options.prompt } : options.prompt;
  const promptIds = resolvePromptIds(prompt, tokenizer, special, manifest.model?.vocabSize);
  if (options.record) assertRecordingTarget(options.record);
  const recorder = options.record ? new SessionRecorder() : undefined;
  const parts = await openDeviceParts(options.splitDir, manifest, {
    withAdapter: options.speculative || options.fallbackLocal,
    threads: options.threads,
  });
  const device = await connectDeviceGenerator({
    parts,
    cloud: {
      url: options.cloud,
      wire: options.wire,
      token: options.token,
      link: options.link,
      recordUplink: options.recordUplink,
    },
    sampling: { temperature: options.temperature, topP: options.topP, seed: options.seed },
    draftThreshold: options.draftThreshold,
    maxDraft: options.maxDraft,
    reconnects: options.reconnects ?? 0,
    fallbackLocal: options.fallbackLocal,
    onResume: options.onResume,
    recorder,
  });
  const streamer = tokenizer && textStreamer(tokenizer, promptIds);
  try {
    budgetWithinCloudContext(promptIds.length, { maxTokens: options.maxNewTokens, given: true }, device.cloudContext, {
      code: 'CONTEXT_LIMIT',
      option: '--max-new-tokens',
    });
    const result = await device.generator.generate(promptIds, {
      maxNewTokens: options.maxNewTokens,
      stopTokenIds: stopTokenIds(tokenizer, special),
      speculative: options.speculative,
      parallelDrafting: options.parallelDrafting && options.speculative,
      parallelBranches: options.parallelBranches,
      chunk: options.chunk,
      onTokens: (ids) => {
        recorder?.committed(ids.length);
        const text = streamer?.push(...ids);
        if (text) options.onText?.(text);
      },
    });
    const rest = streamer?.flush();
    if (rest) options.onText?.(rest);
    // A failed session's recording would replay as a shorter session than it was: none is written.
    if (recorder && !result.error) {
      writeRecording(
        options.record!,
        recorder.finish({
          manifestHash: manifestHash(manifest),
          hiddenSize: manifest.hidden.size,
          promptTokens: promptIds.length,
          mode: options.speculative ? 'run-device' : 'run-device --no-draft',
          link: options.link ? describeLink(options.link) : 'none',
        }),
      );
    }
    return { ...result, promptIds, text: tokenizer && continuationText(tokenizer, promptIds, result.ids) };
  } finally {
    device.close();
  }
}
