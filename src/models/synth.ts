/** `hat synth`: a random-weight Llama-family model of any size, for benchmarks and large-model tests. */
import { join } from 'node:path';
import type { FloatType } from '../onnx/graph-builder.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { parameterCount, toHfConfig, type LlamaConfig } from './config.ts';
import { writeLlamaOnnx, type BuiltModel } from './llama-onnx.ts';
import { CONFIG_FILE, MODEL_FILE, prepareModelDir, writeJson } from './model-dir.ts';
import { randomWeights } from './weights.ts';

export interface SynthOptions {
  dtype?: FloatType;
  seed?: number;
  force?: boolean;
  externalData?: boolean | 'auto';
  reporter?: Reporter;
}

export interface SynthResult extends BuiltModel {
  dir: string;
  parameters: number;
  seconds: number;
}

export async function synthModel(
  config: LlamaConfig,
  outDir: string,
  options: SynthOptions = {},
): Promise<SynthResult> {
  const started = performance.now();
  const reporter = options.reporter ?? silentReporter;
  const dir = prepareModelDir(outDir, options.force);
  const parameters = parameterCount(config);
  reporter.info(
    `synthesising ${(parameters / 1e6).toFixed(1)} M parameters: ` +
      `${config.layers} layers, hidden ${config.hiddenSize}, ` +
      `${config.heads}/${config.kvHeads} heads, vocab ${config.vocabSize}`,
  );
  writeJson(join(dir, CONFIG_FILE), {
    ...toHfConfig(config),
    hat_synthetic: { seed: options.seed ?? 0, random_weights: true },
  });
  const built = await writeLlamaOnnx(config, randomWeights({ seed: options.seed }), join(dir, MODEL_FILE), {
    dtype: options.dtype,
    externalData: options.externalData,
    reporter,
  });
  return { ...built, dir, parameters, seconds: (performance.now() - started) / 1000 };
}
