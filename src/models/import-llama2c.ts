/** `hat import-llama2c`: a llama2.c checkpoint + tokenizer.bin → a model directory hat can generate from. */
import { join } from 'node:path';
import type { FloatType } from '../onnx/graph-builder.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { toHfConfig, type LlamaConfig } from './config.ts';
import { readLlama2cCheckpoint } from './llama2c.ts';
import { llama2cTokenizerConfig, llama2cTokenizerJson, readLlama2cTokenizer } from './llama2c-tokenizer.ts';
import { writeLlamaOnnx } from './llama-onnx.ts';
import {
  CONFIG_FILE,
  MODEL_FILE,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  prepareModelDir,
  writeJson,
} from './model-dir.ts';
import { mapSource } from './weights.ts';

export interface ImportOptions {
  dtype?: FloatType;
  force?: boolean;
  reporter?: Reporter;
}

export interface ImportResult {
  dir: string;
  config: LlamaConfig;
}

export async function importLlama2c(
  checkpointPath: string,
  tokenizerPath: string,
  outDir: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const reporter = options.reporter ?? silentReporter;
  // Read and validate both inputs before anything is written.
  const { config, weights } = readLlama2cCheckpoint(checkpointPath);
  const vocabulary = readLlama2cTokenizer(tokenizerPath, config.vocabSize);
  const dir = prepareModelDir(outDir, options.force);
  reporter.info(
    `llama2.c checkpoint: dim ${config.hiddenSize}, ${config.layers} layers, ` +
      `${config.heads}/${config.kvHeads} heads, vocab ${config.vocabSize}, ` +
      `${config.tiedEmbeddings ? 'shared' : 'separate'} classifier`,
  );
  writeJson(join(dir, TOKENIZER_FILE), llama2cTokenizerJson(vocabulary));
  writeJson(join(dir, TOKENIZER_CONFIG_FILE), llama2cTokenizerConfig());
  writeJson(join(dir, CONFIG_FILE), toHfConfig(config));
  await writeLlamaOnnx(config, mapSource(weights), join(dir, MODEL_FILE), { dtype: options.dtype, reporter });
  return { dir, config };
}
