/**
 * A model directory, as `hat synth`, `hat import-llama2c` and the trained default write it and `hat generate`
 * reads it: model.onnx (+ model.onnx_data), tokenizer.json (+ tokenizer_config.json), config.json (+
 * generation_config.json).
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';
import { assertOutputTarget, createStaging, type Staging } from '../split/output-dir.ts';

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

/**
 * Whether a model may be written to `out`, checked before anything is created: a missing or empty folder is
 * fine; one holding files (a model.onnx or anything else) is replaced as a whole, and only with `force`, since
 * the new model's files cannot be merged into an old folder without leaving stale ones (an old tokenizer.json,
 * an old model.onnx_data). `inputs`: files the run reads, which `out` may not hold even with `force`.
 */
function assertModelTarget(out: string, force: boolean, inputs: readonly string[]): void {
  const target = resolve(out);
  if (!existsSync(target)) return;
  if (!statSync(target).isDirectory())
    throw new HatError('OUTPUT_EXISTS', `--out ${out} exists and is not a folder`, 'choose a folder path for --out');
  assertOutputTarget(out, true, inputs);
  if (force || readdirSync(target).length === 0) return;
  if (existsSync(join(target, MODEL_FILE)))
    throw new HatError(
      'OUTPUT_EXISTS',
      `--out ${out} already holds a ${MODEL_FILE}`,
      'choose another --out, or pass --force to replace that folder and everything in it',
    );
  throw new HatError(
    'OUTPUT_EXISTS',
    `--out ${out} is not empty (it holds no ${MODEL_FILE}, but other files)`,
    'choose a new or empty folder, or pass --force to replace that folder and everything in it',
  );
}

/**
 * Creates the missing folders above `out`, one level at a time (a recursive mkdir never returns under /proc),
 * and returns them outermost first so a failed write can take them away again.
 */
function createParents(out: string): string[] {
  const missing: string[] = [];
  let folder = dirname(resolve(out));
  while (!existsSync(folder) && dirname(folder) !== folder) {
    missing.unshift(folder);
    folder = dirname(folder);
  }
  if (!statSync(folder).isDirectory())
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot create --out ${out}: ${folder} is a file, not a folder`,
      'choose an --out inside a folder',
    );
  const created: string[] = [];
  try {
    for (const level of missing) {
      mkdirSync(level);
      created.push(level);
    }
  } catch (error) {
    removeCreated(created);
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot create --out ${out}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      'choose a writable location for --out',
    );
  }
  return created;
}

/** Removes the folders this run created, innermost first, while they are empty (something else may be there). */
function removeCreated(created: readonly string[]): void {
  for (const folder of [...created].reverse()) {
    try {
      rmdirSync(folder);
    } catch {
      return;
    }
  }
}

/**
 * Writes a model folder all or nothing: `write` fills a hidden staging folder beside `out`, which replaces `out`
 * only once it is complete (src/split/output-dir.ts: an old folder is set aside and deleted last, and an
 * interrupt removes the staging folder). A failure leaves `out` as it was and removes the folders it created.
 */
export async function writeModelDir<T>(
  out: string,
  force: boolean,
  inputs: readonly string[],
  write: (dir: string) => Promise<T>,
): Promise<{ dir: string; result: T }> {
  assertModelTarget(out, force, inputs);
  const created = createParents(out);
  let staging: Staging;
  try {
    staging = await createStaging(out, force, inputs);
  } catch (error) {
    removeCreated(created);
    throw error;
  }
  try {
    const result = await write(staging.dir);
    await staging.publish();
    return { dir: staging.target, result };
  } catch (error) {
    await staging.discard();
    removeCreated(created);
    throw error;
  }
}

export function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
