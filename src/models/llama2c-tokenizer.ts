/**
 * Converts llama2.c's tokenizer.bin (a SentencePiece BPE vocabulary exported as: int32 max_token_length, then
 * per token {float32 score, int32 byte length, bytes}) into a Hugging Face tokenizer.json that any
 * tokenizer.json loader reads — the same shape as Hugging Face's own Llama conversion:
 *  - BPE model with byte fallback (`<0xNN>` tokens), merges derived from the scores: llama2.c repeatedly merges
 *    the adjacent pair whose concatenation has the highest score, so merge (a, b) gets the rank of score(a+b);
 *  - normalizer: prepend "▁" and turn spaces into "▁" (SentencePiece's dummy prefix);
 *  - post-processor: BOS before the text; decoder: "▁" → space, bytes → UTF-8, drop the dummy prefix's space.
 */
import { readFileSync } from 'node:fs';
import { HatError } from '../errors.ts';
import { assertReadableFile } from '../file-checks.ts';

export const SPACE_MARK = '▁';
// A Map, not an object literal: a piece named "constructor" or "toString" must not find Object.prototype's.
const SPECIAL_PIECES = new Map([
  ['<unk>', '<unk>'],
  ['\n<s>\n', '<s>'],
  ['\n</s>\n', '</s>'],
]);

export interface Llama2cVocabulary {
  pieces: string[];
  scores: number[];
}

export function readLlama2cTokenizer(path: string, vocabSize: number): Llama2cVocabulary {
  assertReadableFile(path, `tokenizer ${path}`, 'give the tokenizer.bin exported with the checkpoint');
  const bytes = readFileSync(path);
  const bad = (why: string) =>
    new HatError(
      'BAD_CHECKPOINT',
      `${path} is not a llama2.c tokenizer.bin for a ${vocabSize}-token model: ${why}`,
      'pass the tokenizer that was exported with this checkpoint',
    );
  if (bytes.length < 4) throw bad('it is shorter than its header');
  const maxLength = bytes.readInt32LE(0);
  if (maxLength <= 0 || maxLength > 1024) throw bad(`implausible max token length ${maxLength}`);
  const pieces: string[] = [];
  const scores: number[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let offset = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (offset + 8 > bytes.length) throw bad(`it ends after ${id} tokens`);
    const score = bytes.readFloatLE(offset);
    const length = bytes.readInt32LE(offset + 4);
    offset += 8;
    if (length < 0 || length > maxLength * 4 || offset + length > bytes.length)
      throw bad(`token ${id} has length ${length}`);
    let piece: string;
    try {
      piece = decoder.decode(bytes.subarray(offset, offset + length));
    } catch {
      throw bad(`token ${id} is not valid UTF-8`);
    }
    offset += length;
    pieces.push(SPECIAL_PIECES.get(piece) ?? piece.replaceAll(' ', SPACE_MARK));
    scores.push(score);
  }
  if (offset !== bytes.length) throw bad(`${bytes.length - offset} bytes are left after ${vocabSize} tokens`);
  return { pieces, scores };
}

const SPECIAL_NAMES = new Set(SPECIAL_PIECES.values());
const isByteToken = (piece: string) => /^<0x[0-9A-F]{2}>$/.test(piece);

/** Every (a, b) with a, b and a+b in the vocabulary, best merged score first (ties: lower id of a+b first). */
export function mergesFromScores(vocabulary: Llama2cVocabulary): Array<[string, string]> {
  const ids = new Map(vocabulary.pieces.map((piece, id) => [piece, id]));
  const merges: Array<{ pair: [string, string]; score: number; id: number }> = [];
  vocabulary.pieces.forEach((piece, id) => {
    if (SPECIAL_NAMES.has(piece) || isByteToken(piece)) return;
    const chars = Array.from(piece);
    for (let cut = 1; cut < chars.length; cut++) {
      const left = chars.slice(0, cut).join('');
      const right = chars.slice(cut).join('');
      if (ids.has(left) && ids.has(right)) merges.push({ pair: [left, right], score: vocabulary.scores[id], id });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.id - b.id);
  return merges.map((m) => m.pair);
}

const specialToken = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

export function llama2cTokenizerJson(vocabulary: Llama2cVocabulary): Record<string, unknown> {
  const { pieces } = vocabulary;
  for (const [id, name] of [
    [0, '<unk>'],
    [1, '<s>'],
    [2, '</s>'],
  ] as const) {
    if (pieces[id] !== name)
      throw new HatError(
        'BAD_CHECKPOINT',
        `tokenizer id ${id} is '${pieces[id]}', expected ${name}`,
        'this is not a llama2.c SentencePiece tokenizer',
      );
  }
  // A Map, not `{}` and `in`: pieces named like Object.prototype members ("toString", "__proto__") would be
  // dropped. The first id of a repeated piece wins.
  const ids = new Map<string, number>();
  pieces.forEach((piece, id) => {
    if (!ids.has(piece)) ids.set(piece, id);
  });
  const vocab = Object.fromEntries(ids);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [specialToken(0, '<unk>'), specialToken(1, '<s>'), specialToken(2, '</s>')],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE_MARK },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE_MARK },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE_MARK }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: mergesFromScores(vocabulary),
    },
  };
}

/**
 * tokenizer_config.json: names the special tokens and turns off decode-time space clean-up
 * (SentencePiece keeps text as is).
 */
export function llama2cTokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: 'LlamaTokenizerFast',
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    legacy: false,
  };
}
