/**
 * What a model's config.json (Hugging Face field names), beside a model.onnx or copied into a split by `hat split`,
 * says about the model. One reader for every part of hat: before it, serve-cloud, the device API and the fleet bench
 * each looked for the context under a different list of fields, so a config naming only `seq_length` gave the device
 * its context while serve-cloud admitted sessions at its 8,192 fallback, and a malformed config.json was skipped
 * silently by some readers and a SyntaxError in others. Absent: every fact is unknown. Malformed: BAD_CHECKPOINT
 * naming the file, wherever it is read.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonFile } from '../json-file.ts';

export const MODEL_CONFIG_FILE = 'config.json';

/** The fields families use for the trained context, most common first (Llama/Qwen/Mistral, GPT-2, others). */
const CONTEXT_FIELDS = [
  'max_position_embeddings',
  'n_positions',
  'n_ctx',
  'max_sequence_length',
  'seq_length',
  'max_seq_len',
  'seq_len',
  'context_length',
];

/** config.json in `dir`, or {} when there is none; a malformed one is BAD_CHECKPOINT. */
export function readModelConfig(dir: string): Record<string, unknown> {
  const path = join(dir, MODEL_CONFIG_FILE);
  return existsSync(path) ? readJsonFile(path, 'the model config') : {};
}

function positiveInteger(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

/** The context the model was trained for: the first of CONTEXT_FIELDS that holds a positive integer. */
export function configContext(dir: string): number | undefined {
  const config = readModelConfig(dir);
  return CONTEXT_FIELDS.map((field) => positiveInteger(config[field])).find((value) => value !== undefined);
}

/** The sliding window the config declares, unless it also says `use_sliding_window: false` (Qwen2). */
export function configSlidingWindow(dir: string): number | undefined {
  const config = readModelConfig(dir);
  return config.use_sliding_window === false ? undefined : positiveInteger(config.sliding_window);
}

/** num_attention_heads, if the config declares it. */
export function configAttentionHeads(dir: string): number | undefined {
  return positiveInteger(readModelConfig(dir).num_attention_heads);
}

/** vocab_size, if the config declares it. */
export function configVocabSize(dir: string): number | undefined {
  return positiveInteger(readModelConfig(dir).vocab_size);
}
