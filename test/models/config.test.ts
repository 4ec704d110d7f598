/** Model configurations: presets with overrides (special tokens, head grouping); bad ids are refused. */
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

test('overriding --heads on a preset keeps its query heads per KV head (it kept the preset kvHeads)', () => {
  // llama-7b is multi-head (32/32): 8 heads stay multi-head, where it failed "not a multiple of 32 KV heads".
  const llama = configFrom('llama-7b', { heads: 8, hiddenSize: 512 });
  assert.equal(llama.kvHeads, 8);
  assert.equal(llama.headDim, 64);
  // tinyllama groups 8 query heads per KV head (32/4): 16 heads get 2 KV heads, not a silent 4.
  assert.equal(configFrom('tinyllama-1.1b', { heads: 16 }).kvHeads, 2);
  assert.throws(
    () => configFrom('tinyllama-1.1b', { heads: 4 }),
    (error: unknown) =>
      error instanceof HatError &&
      error.code === 'BAD_OPTION' &&
      /--heads 4 .* 8 query heads per KV head/.test(error.message) &&
      /--kv-heads/.test(error.hint ?? ''),
  );
  // An explicit --kv-heads wins, and a preset untouched keeps its own.
  assert.equal(configFrom('tinyllama-1.1b', { heads: 4, kvHeads: 4 }).kvHeads, 4);
  assert.equal(configFrom('tinyllama-1.1b', { layers: 2 }).kvHeads, 4);
});

test("Object.prototype's names are not presets: `--config constructor` is unknown, not a bad vocabSize", () => {
  for (const name of ['constructor', 'toString', '__proto__']) {
    assert.throws(
      () => presetConfig(name),
      (error: unknown) => error instanceof HatError && /^unknown --config/.test(error.message),
      name,
    );
  }
});
