/**
 * Text ↔ token ids through a Hugging Face tokenizer.json, loaded with @huggingface/tokenizers — the same path
 * a user's own Hugging Face model takes. BOS/EOS come from tokenizer_config.json, then config.json, then the
 * well-known special-token names; generation stops on every id generation_config.json and config.json list too.
 * Text is decoded as the tokens spell it, without transformers' clean_up_tokenization_spaces (" ," → ","), so
 * the text of more tokens only ever extends the text of fewer: streamed pieces add up to the final text.
 */
import { existsSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { HatError } from '../errors.ts';
import { readJsonFile } from '../json-file.ts';

export interface TextTokenizer {
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  /**
   * Every id that ends a generation: eos_token and the ids generation_config.json and config.json name (chat models
   * end a turn with one, e.g. Qwen2.5-Instruct's <|im_end|> and <|endoftext|>), deduplicated.
   */
  readonly stopTokenIds: readonly number[];
  /** Token ids of `text`, with the tokenizer's own special tokens (e.g. BOS) when `addSpecialTokens`. */
  encode(text: string, addSpecialTokens?: boolean): number[];
  /** Text of `ids`, special tokens left out, spaces as the tokens have them (no clean-up). */
  decode(ids: readonly number[]): string;
}

export interface TokenizerFiles {
  tokenizer: string;
  tokenizerConfig?: string;
  /** The model's config.json, consulted for bos_token_id / eos_token_id. */
  config?: string;
  /** generation_config.json, consulted for the eos_token_id (one id or a list) that generation stops on. */
  generationConfig?: string;
}

const BOS_NAMES = ['<s>', '<|begin_of_text|>', '<bos>', '<|startoftext|>'];
const EOS_NAMES = ['</s>', '<|end_of_text|>', '<|endoftext|>', '<eos>', '<|im_end|>'];

/** A special token named in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function tokenName(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return undefined;
}

/** A config's token id (bos_token_id, …): one id, or the first of a list; anything but a token id is skipped. */
export function firstId(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  if (Array.isArray(value)) return firstId(value[0]);
  return undefined;
}

/** The token ids a config's eos_token_id (or similar) names: one id or a list; anything else is skipped. */
export function configTokenIds(value: unknown): number[] {
  const all = Array.isArray(value) ? (value as unknown[]) : [value];
  return all.filter((id): id is number => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0);
}

/** The ids given, in order, without repeats and without undefined. */
export function uniqueIds(ids: Iterable<number | undefined>): number[] {
  return [...new Set([...ids].filter((id): id is number => id !== undefined))];
}

export function loadTokenizer(files: TokenizerFiles): TextTokenizer {
  if (!existsSync(files.tokenizer))
    throw new HatError(
      'FILE_NOT_FOUND',
      `tokenizer not found: ${files.tokenizer}`,
      'put a Hugging Face tokenizer.json beside the model',
    );
  const json = readJsonFile(files.tokenizer, 'tokenizer');
  const tokenizerConfig = files.tokenizerConfig ? readJsonFile(files.tokenizerConfig, 'tokenizer config') : {};
  const modelConfig = files.config ? readJsonFile(files.config, 'model config') : {};
  const generationConfig = files.generationConfig ? readJsonFile(files.generationConfig, 'generation config') : {};
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

  const eosTokenId = special('eos_token', 'eos_token_id', EOS_NAMES);
  return {
    bosTokenId: special('bos_token', 'bos_token_id', BOS_NAMES),
    eosTokenId,
    stopTokenIds: uniqueIds([
      eosTokenId,
      ...configTokenIds(generationConfig.eos_token_id),
      ...configTokenIds(modelConfig.eos_token_id),
    ]),
    encode: (text, addSpecialTokens = true) => tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids,
    // The library rejects an empty id list; empty in, empty out. The library cleans up spaces by default (as
    // transformers' clean_up_tokenization_spaces: " ," → ",", " 's" → "'s"), which rewrites text already streamed
    // when the next token arrives; hat's text is what the tokens spell, streamed or not (as vLLM and TGI give it).
    decode: (ids) =>
      ids.length === 0
        ? ''
        : tokenizer.decode([...ids], { skip_special_tokens: true, clean_up_tokenization_spaces: false }),
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
 * incomplete, so it is held back until the next token. The deltas add up to continuationText of all the ids, since
 * decode never rewrites text it has given (no space clean-up). The decoded window restarts every WINDOW tokens (at a
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
    let fresh = '';
    if (text.startsWith(emitted)) {
      fresh = text.slice(emitted.length);
      emitted = text;
    } else if (!emitted.startsWith(text)) {
      // A decoder that rewrote text already sent (loadTokenizer's does not): send all that follows the part both
      // agree on rather than drop it. Text that only shrank (a trimmed space) stands until the text grows past it.
      let same = 0;
      while (same < text.length && text[same] === emitted[same]) same++;
      if (same > 0 && /[\uD800-\uDBFF]/.test(text[same - 1])) same--; // never split a surrogate pair
      fresh = text.slice(same);
      emitted = text;
    }
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
