/**
 * A real split of a small random Llama built in code, plus an identity "adapter" (the no-adapter baseline: the
 * output part applied straight to the input part's hidden state), for runtime tests that need drafts without
 * waiting for adapter training.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { llamaConfig, type LlamaConfig } from '../../src/models/config.ts';
import { writeLlamaOnnx } from '../../src/models/llama-onnx.ts';
import { randomWeights } from '../../src/models/weights.ts';
import { splitModel } from '../../src/split/split.ts';
import { silentReporter } from '../../src/reporter.ts';
import { GraphBuilder } from '../../src/onnx/graph-builder.ts';
import { encodeModel } from '../../src/onnx/model-io.ts';
import type { SplitManifest } from '../../src/split/manifest.ts';
import { startCloud, type ServeOptions, type StartedCloud } from '../../src/runtime/cloud/serve.ts';
import { silentLogger } from '../../src/runtime/cloud/logger.ts';
import type { RunDeviceOptions } from '../../src/runtime/device/run-device.ts';
import { tempDirRemovedAtExit } from './temp-dir.ts';

export const SMALL_LLAMA: LlamaConfig = llamaConfig({
  vocabSize: 64,
  hiddenSize: 32,
  intermediateSize: 64,
  layers: 4,
  heads: 4,
  kvHeads: 2,
});

export async function makeSmallSplit(
  config = SMALL_LLAMA,
  seed = 3,
): Promise<{ dir: string; model: string; split: string }> {
  const dir = tempDirRemovedAtExit('hat-rt-'); // for the whole test file: removed when its process exits
  const model = join(dir, 'model.onnx');
  // A large weight scale makes the random model's greedy path non-trivial (no single repeated token).
  await writeLlamaOnnx(config, randomWeights({ seed, std: 0.3 }), model);
  const split = join(dir, 'split');
  await splitModel({ model, out: split }, silentReporter);
  return { dir, model, split };
}

export function addIdentityAdapter(splitDir: string): void {
  const manifestPath = join(splitDir, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as SplitManifest;
  const b = new GraphBuilder('identity-adapter');
  const h = b.input('hidden_states', 'float32', [1, 'sequence_length', manifest.hidden.size]);
  b.output(
    b.op('Identity', [h]),
    'float32',
    [1, 'sequence_length', manifest.hidden.size],
    manifest.boundaries.middleToOutput,
  );
  writeFileSync(join(splitDir, 'adapter.onnx'), encodeModel(b.build()));
  manifest.adapter = {
    kind: 'linear',
    file: 'adapter.onnx',
    input: 'hidden_states',
    output: manifest.boundaries.middleToOutput,
    defaultThreshold: 0.6,
    metrics: { note: 'identity adapter for tests' },
  };
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
}

/**
 * Serves `splitDir` on a loopback port the OS picks, with the defaults a test cloud shares (one worker, two
 * sessions, small frames and context, no logging) kept in one place; `overrides` names what a test needs otherwise.
 */
export function serveSplit(splitDir: string, overrides: Partial<ServeOptions> = {}): Promise<StartedCloud> {
  return startCloud({
    splitDir,
    host: '127.0.0.1',
    port: 0,
    workers: 1,
    maxSessions: 2,
    idleTimeoutMs: 60_000,
    maxTokensPerFrame: 64,
    maxContext: 128,
    logger: silentLogger,
    ...overrides,
  });
}

/**
 * run-device's options for a test device of `splitDir` talking to a loopback cloud on `port`: greedy, drafting at
 * η = 0 up to 3 drafts, 4-token chunks, fp16 wire, one thread; `overrides` names the prompt and what else differs.
 */
export function deviceOptions(
  splitDir: string,
  port: number,
  overrides: Partial<RunDeviceOptions> & Pick<RunDeviceOptions, 'prompt'>,
): RunDeviceOptions {
  return {
    splitDir,
    cloud: `ws://127.0.0.1:${port}`,
    maxNewTokens: 16,
    temperature: 0,
    topP: 1,
    seed: 0,
    draftThreshold: 0,
    maxDraft: 3,
    speculative: true,
    parallelDrafting: true,
    parallelBranches: 1,
    chunk: 4,
    wire: 'fp16',
    fallbackLocal: false,
    threads: 1,
    ...overrides,
  };
}
