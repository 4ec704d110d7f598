/** `hat synth`: a random-weight Llama-family model of any size, for benchmarks and large-model tests. */
import { basename, join } from 'node:path';
import type { FloatType } from '../onnx/graph-builder.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { parameterCount, toHfConfig, type LlamaConfig } from './config.ts';
import { writeLlamaOnnx, type BuiltModel } from './llama-onnx.ts';
import { CONFIG_FILE, MODEL_FILE, writeJson, writeModelDir } from './model-dir.ts';
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
  const parameters = parameterCount(config);
  const { dir, result: built } = await writeModelDir(outDir, options.force ?? false, [], async (staging) => {
    // Only once --out has passed its checks, so a refused --out is one error line.
    reporter.info(
      `synthesising ${(parameters / 1e6).toFixed(1)} M parameters: ` +
        `${config.layers} layers, hidden ${config.hiddenSize}, ` +
        `${config.heads}/${config.kvHeads} heads, vocab ${config.vocabSize}`,
    );
    writeJson(join(staging, CONFIG_FILE), {
      ...toHfConfig(config),
      hat_synthetic: { seed: options.seed ?? 0, random_weights: true },
    });
    return writeLlamaOnnx(config, randomWeights({ seed: options.seed }), join(staging, MODEL_FILE), {
      dtype: options.dtype,
      externalData: options.externalData,
      reporter,
    });
  });
  // The files were written in the staging folder; name them where they now are.
  const modelPath = join(dir, MODEL_FILE);
  const dataPath = built.dataPath && join(dir, basename(built.dataPath));
  return { ...built, modelPath, dataPath, dir, parameters, seconds: (performance.now() - started) / 1000 };
}
