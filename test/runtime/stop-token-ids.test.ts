/** Which token ids end a generation: every one the model's config files name, not just eos_token. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSpecialIds, stopTokenIds } from '../../src/runtime/prompt.ts';
import { loadTokenizer } from '../../src/runtime/tokenizer.ts';
import { wordLevelTokenizerJson } from '../helpers/word-level-tokenizer.ts';

/** A folder with a word-level tokenizer.json over `words` (id = index) and the given config files. */
function modelDir(words: string[], files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'hat-stop-ids-'));
  const vocab = Object.fromEntries(words.map((w, i) => [w, i]));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(wordLevelTokenizerJson(vocab, '<unk>')));
  for (const [name, json] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(json));
  return dir;
}

const WORDS = ['<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', 'hello', '<|eot_id|>'];

function load(dir: string) {
  const beside = (name: string) => (existsSync(join(dir, name)) ? join(dir, name) : undefined);
  return loadTokenizer({
    tokenizer: join(dir, 'tokenizer.json'),
    tokenizerConfig: beside('tokenizer_config.json'),
    config: beside('config.json'),
    generationConfig: beside('generation_config.json'),
  });
}

test('a Qwen2.5-Instruct-style model stops on every id generation_config.json lists, and on eos_token', () => {
  // Qwen2.5-Instruct: eos_token <|im_end|>, config.json eos_token_id 151645, generation_config.json [151645, 151643].
  const dir = modelDir(WORDS, {
    'tokenizer_config.json': { eos_token: '<|im_end|>' },
    'config.json': { eos_token_id: 3 },
    'generation_config.json': { eos_token_id: [3, 1] },
  });
  const tokenizer = load(dir);
  assert.equal(tokenizer.eosTokenId, 3);
  assert.deepEqual([...tokenizer.stopTokenIds].sort(), [1, 3]);
});

test('ids are collected from all three files (a number or a list), deduplicated', () => {
  const dir = modelDir(WORDS, {
    'tokenizer_config.json': { eos_token: { content: '<|eot_id|>', special: true } },
    'config.json': { eos_token_id: [1, 5] },
    'generation_config.json': { eos_token_id: 3 },
  });
  assert.deepEqual([...load(dir).stopTokenIds].sort(), [1, 3, 5]);
  // Without a tokenizer (ids-only models), the config files alone.
  assert.deepEqual([...configSpecialIds(dir).stopTokenIds!].sort(), [1, 3, 5]);
});

test('without generation_config.json the single eos still stops; junk values are ignored', () => {
  const dir = modelDir(WORDS, {
    'tokenizer_config.json': { eos_token: '<|endoftext|>' },
    'config.json': { eos_token_id: [null, 'x', -1, 1.5, 1] },
  });
  assert.deepEqual(load(dir).stopTokenIds, [1]);
  const bare = modelDir(WORDS, {});
  const tokenizer = loadTokenizer({ tokenizer: join(bare, 'tokenizer.json') });
  assert.deepEqual(tokenizer.stopTokenIds, [1], 'the well-known <|endoftext|> name');
});

test('stopTokenIds joins the tokenizer, the config files and the manifest', () => {
  const dir = modelDir(WORDS, { 'generation_config.json': { eos_token_id: [3, 1] } });
  const tokenizer = loadTokenizer({ tokenizer: join(dir, 'tokenizer.json') });
  assert.deepEqual([...stopTokenIds(tokenizer, { eosTokenId: 5, stopTokenIds: [3] })].sort(), [1, 3, 5]);
  assert.deepEqual(stopTokenIds(undefined, { eosTokenId: 2 }), [2]);
  assert.deepEqual(stopTokenIds(undefined, {}), []);
});
