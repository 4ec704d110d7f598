/** Model configurations: a preset with a smaller vocabulary keeps usable special tokens; bad ids are refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configFrom, llamaConfig, presetConfig } from '../../src/models/config.ts';
import { HatError } from '../../src/errors.ts';

test('a preset with a smaller vocabulary keeps its special tokens inside it, at the same distance from the end', () => {
  const qwen = presetConfig('qwen2.5-0.5b');
  const small = configFrom('qwen2.5-0.5b', { vocabSize: 2048 });
  assert.equal(small.bosTokenId, 2048 - (qwen.vocabSize - qwen.bosTokenId!));
  assert.equal(small.eosTokenId, 2048 - (qwen.vocabSize - qwen.eosTokenId!));
  assert.ok(small.bosTokenId! < 2048 && small.eosTokenId! < 2048);
  // Ids that still fit are kept as they are.
  assert.equal(configFrom('qwen2.5-0.5b', { vocabSize: 151_900 }).bosTokenId, qwen.bosTokenId);
});

test('special token ids outside the vocabulary are a configuration error', () => {
  const dims = { vocabSize: 64, hiddenSize: 16, intermediateSize: 32, layers: 1, heads: 2, kvHeads: 2 };
  assert.throws(
    () => llamaConfig({ ...dims, bosTokenId: 64 }),
    (error: unknown) => error instanceof HatError && error.code === 'BAD_OPTION' && /bosTokenId 64/.test(error.message),
  );
  assert.equal(llamaConfig({ ...dims, bosTokenId: 63 }).bosTokenId, 63);
});
