/**
 * run-device's core: open the device's parts and tokenizer, connect to the cloud, generate with HAT and stream
 * the text. Works from a device bundle (input, output, adapter, manifest, tokenizer) — no middle part needed.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HatError } from '../../errors.ts';
import type { LinkSpec } from '../link.ts';
import type { WireDTypeName } from '../protocol/frame.ts';
import { manifestHash, readManifest } from '../split-dir.ts';
import { continuationText, loadTokenizer, textStreamer, type TextTokenizer } from '../tokenizer.ts';
import { AutoDraftPolicy, FixedThresholdPolicy } from '../speculative/draft-policy.ts';
import { createSampler } from '../speculative/sampler.ts';
import type { SplitManifest } from '../../split/manifest.ts';
import { CloudClient } from './cloud-client.ts';
import { openDeviceParts } from './device-parts.ts';
import { Drafter } from './drafter.ts';
import { HatGenerator, type HatGeneration } from './hat-generator.ts';

export interface RunDeviceOptions {
  splitDir: string;
  cloud: string;
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  /** Draft with the adapter at all (false: U-shape, one round trip per token). */
  speculative: boolean;
  parallelDrafting: boolean;
  chunk: 'auto' | 'off' | number;
  wire: WireDTypeName;
  link?: LinkSpec;
  token?: string;
  fallbackLocal: boolean;
  threads?: number;
  onText?: (text: string) => void;
  recordUplink?: (bytes: Uint8Array) => void;
}

export interface RunDeviceResult extends HatGeneration {
  promptIds: number[];
  text: string;
}

export function splitTokenizer(splitDir: string, manifest: SplitManifest): TextTokenizer {
  const file = join(splitDir, manifest.tokenizer ?? 'tokenizer.json');
  if (!existsSync(file)) throw new HatError('BAD_MANIFEST', `${splitDir} has no tokenizer.json`, 'split a model that has tokenizer.json beside it, or copy it into the split directory');
  const beside = (name: string) => (existsSync(join(splitDir, name)) ? join(splitDir, name) : undefined);
  return loadTokenizer({ tokenizer: file, tokenizerConfig: beside('tokenizer_config.json'), config: beside('config.json') });
}

export function encodePrompt(tokenizer: TextTokenizer, prompt: string): number[] {
  const ids = prompt === '' ? (tokenizer.bosTokenId === undefined ? [] : [tokenizer.bosTokenId]) : tokenizer.encode(prompt);
  if (ids.length === 0) throw new HatError('BAD_OPTION', '--prompt: an empty prompt needs a BOS token, and this tokenizer defines none', 'give a non-empty --prompt');
  return ids;
}

export async function runDevice(options: RunDeviceOptions): Promise<RunDeviceResult> {
  const manifest = readManifest(options.splitDir);
  const tokenizer = splitTokenizer(options.splitDir, manifest);
  const promptIds = encodePrompt(tokenizer, options.prompt);
  const parts = await openDeviceParts(options.splitDir, manifest, { withAdapter: options.speculative, threads: options.threads });
  const start = manifest.adapter?.defaultThreshold ?? 0.6;
  const policy = options.draftThreshold === 'auto'
    ? new AutoDraftPolicy(start, options.maxDraft)
    : new FixedThresholdPolicy(options.draftThreshold, options.maxDraft);
  const sampler = createSampler({ temperature: options.temperature, topP: options.topP, seed: options.seed });
  const client = await CloudClient.connect({
    url: options.cloud, manifestHash: manifestHash(manifest), hiddenSize: manifest.hidden.size, wire: options.wire,
    token: options.token, link: options.link, recordUplink: options.recordUplink,
  });
  const streamer = textStreamer(tokenizer, promptIds);
  try {
    const generator = new HatGenerator(parts, client, sampler, new Drafter(parts, sampler, policy));
    const result = await generator.generate(promptIds, {
      maxNewTokens: options.maxNewTokens,
      eosTokenId: tokenizer.eosTokenId,
      speculative: options.speculative,
      parallelDrafting: options.parallelDrafting && options.speculative,
      chunk: options.chunk,
      fallbackLocal: options.fallbackLocal,
      onTokens: (ids) => { for (const id of ids) { const text = streamer.push(id); if (text) options.onText?.(text); } },
    });
    const rest = streamer.flush();
    if (rest) options.onText?.(rest);
    return { ...result, promptIds, text: continuationText(tokenizer, promptIds, result.ids) };
  } finally {
    client.close();
  }
}
