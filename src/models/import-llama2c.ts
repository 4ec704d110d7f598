/** `hat import-llama2c`: a llama2.c checkpoint + tokenizer.bin → a model directory hat can generate from. */
import { join } from 'node:path';
import type { FloatType } from '../onnx/graph-builder.ts';
import { silentReporter, type Reporter } from '../reporter.ts';
import { toHfConfig, type LlamaConfig } from './config.ts';
import { openLlama2cCheckpoint } from './llama2c.ts';
import { llama2cTokenizerConfig, llama2cTokenizerJson, readLlama2cTokenizer } from './llama2c-tokenizer.ts';
import { writeLlamaOnnx } from './llama-onnx.ts';
import {
  CONFIG_FILE,
  MODEL_FILE,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  writeJson,
  writeModelDir,
} from './model-dir.ts';

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
  // Both inputs are checked (the checkpoint's header and size, the tokenizer's special ids) before anything is
  // created; the weights are then read tensor by tensor while the model is written.
  const checkpoint = openLlama2cCheckpoint(checkpointPath);
  try {
    const { config } = checkpoint;
    const tokenizerJson = llama2cTokenizerJson(readLlama2cTokenizer(tokenizerPath, config.vocabSize));
    const inputs = [checkpointPath, tokenizerPath];
    const { dir } = await writeModelDir(outDir, options.force ?? false, inputs, async (staging) => {
      // Only once --out has passed its checks, so a refused --out is one error line.
      reporter.info(
        `llama2.c checkpoint: dim ${config.hiddenSize}, ${config.layers} layers, ` +
          `${config.heads}/${config.kvHeads} heads, vocab ${config.vocabSize}, ` +
          `${config.tiedEmbeddings ? 'shared' : 'separate'} classifier`,
      );
      writeJson(join(staging, TOKENIZER_FILE), tokenizerJson);
      writeJson(join(staging, TOKENIZER_CONFIG_FILE), llama2cTokenizerConfig());
      writeJson(join(staging, CONFIG_FILE), toHfConfig(config));
      await writeLlamaOnnx(config, checkpoint.source, join(staging, MODEL_FILE), { dtype: options.dtype, reporter });
    });
    return { dir, config };
  } finally {
    checkpoint.close();
  }
}
