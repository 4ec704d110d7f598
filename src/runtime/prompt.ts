/**
 * What a generation starts from: prompt text through the tokenizer, or token ids given directly (`--prompt-ids`),
 * so third-party and random-weight models without a tokenizer can be run and compared. An empty prompt starts
 * from the BOS id — the tokenizer's, else the one config.json / generation_config.json names. Generation stops on
 * every EOS id those files list (stopTokenIds).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HatError } from '../errors.ts';
import { readJsonFile } from '../json-file.ts';
import { readModelConfig } from './model-config.ts';
import { configTokenIds, firstId, uniqueIds, type TextTokenizer } from './tokenizer.ts';

export interface PromptInput {
  /** Prompt text (needs a tokenizer). */
  text?: string;
  /** Prompt token ids; an empty list starts from BOS. */
  ids?: readonly number[];
}

export interface SpecialIds {
  bosTokenId?: number;
  eosTokenId?: number;
  /** Every EOS id the config files list (generation_config.json's eos_token_id is often a list). */
  stopTokenIds?: readonly number[];
}

/**
 * bos/eos ids named by generation_config.json, then config.json, in `dir`, and every eos id either lists. A missing
 * file names none; a malformed one is BAD_CHECKPOINT (skipping it stopped generation from stopping on its eos ids).
 */
export function configSpecialIds(dir: string): SpecialIds {
  const found: SpecialIds = {};
  const stops: number[] = [];
  const generationConfig = join(dir, 'generation_config.json');
  const configs = [
    existsSync(generationConfig) ? readJsonFile(generationConfig, 'the generation config') : {},
    readModelConfig(dir),
  ];
  for (const json of configs) {
    found.bosTokenId ??= firstId(json.bos_token_id);
    found.eosTokenId ??= firstId(json.eos_token_id);
    stops.push(...configTokenIds(json.eos_token_id));
  }
  found.stopTokenIds = uniqueIds(stops);
  return found;
}

/** The ids a generation stops on: the tokenizer's, the config files' and the model's eos id, deduplicated. */
export function stopTokenIds(tokenizer: TextTokenizer | undefined, special: SpecialIds): number[] {
  return uniqueIds([...(tokenizer?.stopTokenIds ?? []), ...(special.stopTokenIds ?? []), special.eosTokenId]);
}

/** `--prompt-ids "1,2,3"` → [1, 2, 3]; "" → [] (start from BOS). */
export function parsePromptIds(value: string): number[] {
  const trimmed = value.trim();
  if (trimmed === '') return [];
  return trimmed.split(',').map((part) => {
    const id = Number(part.trim());
    if (!/^\d+$/.test(part.trim()) || !Number.isSafeInteger(id)) {
      throw new HatError(
        'BAD_OPTION',
        `--prompt-ids: '${part.trim()}' is not a token id`,
        'give comma-separated non-negative integers, e.g. --prompt-ids 1,2,3',
      );
    }
    return id;
  });
}

/** The prompt's token ids, checked against the vocabulary when its size is known. */
export function promptIds(
  input: PromptInput,
  tokenizer: TextTokenizer | undefined,
  special: SpecialIds,
  vocabSize?: number,
): number[] {
  if (input.ids !== undefined && input.text !== undefined) {
    throw new HatError('BAD_OPTION', '--prompt and --prompt-ids were both given', 'give one of them');
  }
  let ids: number[];
  if (input.ids !== undefined) {
    ids = [...input.ids];
  } else if (input.text) {
    if (!tokenizer)
      throw new HatError(
        'FILE_NOT_FOUND',
        'this model has no tokenizer.json, so --prompt text cannot be encoded',
        'give token ids with --prompt-ids 1,2,3',
      );
    ids = tokenizer.encode(input.text);
  } else {
    ids = [];
  }
  if (ids.length === 0) {
    const bos = tokenizer?.bosTokenId ?? special.bosTokenId;
    if (bos === undefined) {
      throw new HatError(
        'BAD_OPTION',
        'an empty prompt starts from the BOS token, and neither the tokenizer nor config.json names one',
        'give a prompt (--prompt text or --prompt-ids 1,2,3)',
      );
    }
    ids = [bos];
  }
  assertTokenIds(ids, vocabSize, 'prompt');
  return ids;
}

/**
 * Every id a token id (a whole number from 0) and, when `vocabSize` is known, below it; else a BAD_OPTION naming
 * `what` (e.g. "prompt", "--prompts file.jsonl:3:").
 */
export function assertTokenIds(
  ids: readonly number[],
  vocabSize: number | undefined,
  what: string,
  hint = vocabSize === undefined ? undefined : `give ids below ${vocabSize}`,
): void {
  // A negative id would be read by the model's Gather as counting back from the end of the vocabulary, and a
  // fraction fails inside onnxruntime's int64 conversion: refused here, as an id past the vocabulary is.
  const invalid = ids.find((id) => !Number.isSafeInteger(id) || id < 0);
  if (invalid !== undefined) {
    throw new HatError(
      'BAD_OPTION',
      `${what} token id ${invalid} is not a token id`,
      'token ids are whole numbers from 0 (e.g. --prompt-ids 1,2,3)',
    );
  }
  const outside = vocabSize === undefined ? undefined : ids.find((id) => id >= vocabSize);
  if (outside !== undefined) {
    throw new HatError(
      'BAD_OPTION',
      `${what} token id ${outside} is outside the vocabulary (${vocabSize} tokens)`,
      hint,
    );
  }
}
