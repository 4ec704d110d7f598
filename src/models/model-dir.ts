/**
 * A model directory, as `hat synth`, `hat import-llama2c` and the trained default write it and `hat generate`
 * reads it: model.onnx (+ model.onnx_data), tokenizer.json (+ tokenizer_config.json), config.json (+
 * generation_config.json).
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';

export const MODEL_FILE = 'model.onnx';
export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const CONFIG_FILE = 'config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';

export interface ModelFiles {
  model: string;
  /** Present when the folder holds one. */
  tokenizer?: string;
  tokenizerConfig?: string;
  config?: string;
  generationConfig?: string;
}

/** Accepts a model.onnx path or a folder holding one; tokenizer and config files are looked up beside the model. */
export function resolveModelFiles(path: string): ModelFiles {
  const absolute = resolve(path);
  if (!existsSync(absolute))
    throw new HatError(
      'FILE_NOT_FOUND',
      `model not found: ${path}`,
      'pass a model.onnx file or a folder that holds one',
    );
  const model = statSync(absolute).isDirectory() ? join(absolute, MODEL_FILE) : absolute;
  if (!existsSync(model))
    throw new HatError(
      'FILE_NOT_FOUND',
      `${path} holds no ${MODEL_FILE}`,
      'pass a model.onnx file or a folder that holds one',
    );
  const beside = (name: string) => (existsSync(join(dirname(model), name)) ? join(dirname(model), name) : undefined);
  return {
    model,
    tokenizer: beside(TOKENIZER_FILE),
    tokenizerConfig: beside(TOKENIZER_CONFIG_FILE),
    config: beside(CONFIG_FILE),
    generationConfig: beside(GENERATION_CONFIG_FILE),
  };
}

/** Creates `dir` for a new model; refuses to overwrite one unless `force`. */
export function prepareModelDir(dir: string, force = false): string {
  const absolute = resolve(dir);
  if (existsSync(absolute) && !statSync(absolute).isDirectory())
    throw new HatError('OUTPUT_EXISTS', `${dir} exists and is not a folder`, 'choose another --out');
  if (existsSync(join(absolute, MODEL_FILE)) && !force) {
    throw new HatError(
      'OUTPUT_EXISTS',
      `${dir} already holds a ${MODEL_FILE}`,
      'choose another --out, or pass --force to overwrite it',
    );
  }
  mkdirSync(absolute, { recursive: true });
  return absolute;
}

export function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
