/**
 * Text ↔ token ids through a Hugging Face tokenizer.json, loaded with @huggingface/tokenizers — the same path
 * a user's own Hugging Face model takes. BOS/EOS come from tokenizer_config.json, then config.json, then the
 * well-known special-token names.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { HatError } from '../errors.ts';

export interface TextTokenizer {
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  /** Token ids of `text`, with the tokenizer's own special tokens (e.g. BOS) when `addSpecialTokens`. */
  encode(text: string, addSpecialTokens?: boolean): number[];
  /** Text of `ids`, special tokens left out. */
  decode(ids: readonly number[]): string;
}

export interface TokenizerFiles {
  tokenizer: string;
  tokenizerConfig?: string;
  /** The model's config.json, consulted for bos_token_id / eos_token_id. */
  config?: string;
}

const BOS_NAMES = ['<s>', '<|begin_of_text|>', '<bos>', '<|startoftext|>'];
const EOS_NAMES = ['</s>', '<|end_of_text|>', '<|endoftext|>', '<eos>', '<|im_end|>'];

function readJson(path: string, what: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${what} ${path} is not valid JSON (${(error as Error).message.split('\n')[0]})`,
      'regenerate or re-download it',
    );
  }
}

/** A special token named in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function tokenName(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return undefined;
}

function firstId(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (Array.isArray(value) && typeof value[0] === 'number') return value[0];
  return undefined;
}

export function loadTokenizer(files: TokenizerFiles): TextTokenizer {
  if (!existsSync(files.tokenizer))
    throw new HatError(
      'FILE_NOT_FOUND',
      `tokenizer not found: ${files.tokenizer}`,
      'put a Hugging Face tokenizer.json beside the model',
    );
  const json = readJson(files.tokenizer, 'tokenizer');
  const tokenizerConfig = files.tokenizerConfig ? readJson(files.tokenizerConfig, 'tokenizer config') : {};
  const modelConfig = files.config ? readJson(files.config, 'model config') : {};
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, tokenizerConfig);
  } catch (error) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${files.tokenizer} is not a tokenizer.json this tokenizer library can load ` +
        `(${(error as Error).message.split('\n')[0]})`,
      'save it with Hugging Face tokenizers (tokenizer.save) or transformers (save_pretrained)',
    );
  }
  const idOf = (name: string | undefined) => (name === undefined ? undefined : tokenizer.token_to_id(name));
  const special = (configKey: string, idKey: string, names: string[]) =>
    idOf(tokenName(tokenizerConfig[configKey])) ??
    firstId(modelConfig[idKey]) ??
    names.map(idOf).find((id) => id !== undefined);

  return {
    bosTokenId: special('bos_token', 'bos_token_id', BOS_NAMES),
    eosTokenId: special('eos_token', 'eos_token_id', EOS_NAMES),
    encode: (text, addSpecialTokens = true) => tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids,
    // The library rejects an empty id list; empty in, empty out.
    decode: (ids) => (ids.length === 0 ? '' : tokenizer.decode([...ids], { skip_special_tokens: true })),
  };
}

/**
 * The text that `ids` add after `context` (the prompt). Decoding context + ids together keeps the space that
 * SentencePiece-style decoders strip from the first token of a sequence: "Lily and Tom" + " were".
 */
export function continuationText(
  tokenizer: TextTokenizer,
  context: readonly number[],
  ids: readonly number[],
  before = tokenizer.decode(context),
): string {
  const all = tokenizer.decode([...context, ...ids]);
  return all.startsWith(before) ? all.slice(before.length) : tokenizer.decode(ids);
}

/**
 * Turns a growing list of ids into text deltas for streaming. Decoding the ids after a few tokens of context keeps
 * multi-token characters (byte-fallback UTF-8, merged spaces) right; a trailing U+FFFD means a character is still
 * incomplete, so it is held back until the next token. The decoded window restarts every WINDOW tokens (at a
 * complete character) so each token costs a bounded decode: decoding the whole prompt and text again for every
 * token had cost a device over 1 ms per round on long runs.
 */
export function textStreamer(
  tokenizer: TextTokenizer,
  context: readonly number[] = [],
): { push(...ids: number[]): string; flush(): string } {
  const TAIL = 4,
    WINDOW = 32;
  let tail = context.slice(-TAIL);
  let tailText = tokenizer.decode(tail);
  let ids: number[] = [];
  let emitted = '';
  const delta = (final: boolean) => {
    const text = continuationText(tokenizer, tail, ids, tailText);
    if (!final && text.endsWith('\uFFFD')) return '';
    const fresh = text.startsWith(emitted) ? text.slice(emitted.length) : '';
    emitted = text;
    if (ids.length >= WINDOW) {
      tail = ids.slice(-TAIL);
      tailText = tokenizer.decode(tail);
      ids = [];
      emitted = '';
    }
    return fresh;
  };
  return {
    /** Adds one or more ids (a speculative round commits several: one decode for all of them). */
    push(...added) {
      ids.push(...added);
      return delta(false);
    },
    flush() {
      return delta(true);
    },
  };
}

/** Prompt text → ids; an empty prompt starts from BOS alone (encoding "" can yield a lone dummy-prefix token). */
