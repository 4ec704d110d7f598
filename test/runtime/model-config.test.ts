/**
 * config.json read one way everywhere (src/runtime/model-config.ts): serve-cloud, the fleet bench and the device
 * API once looked for the context under different fields, and a malformed file was skipped by some readers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError } from '../../src/errors.ts';
import { configContext, configSlidingWindow, readModelConfig } from '../../src/runtime/model-config.ts';
import { configSpecialIds } from '../../src/runtime/prompt.ts';
import { readManifest } from '../../src/runtime/split-dir.ts';
import { sessionLimits } from '../../src/runtime/cloud/serve.ts';
import { clampLengths } from '../../src/bench/prompts.ts';
import { randomWeightNotes } from '../../src/bench/run-bench.ts';

const DEFAULT_SPLIT = new URL('../../fixtures/default-split', import.meta.url).pathname;

function dirWith(files: Record<string, string | object>): string {
  const dir = mkdtempSync(join(tmpdir(), 'hat-model-config-'));
  for (const [name, body] of Object.entries(files)) {
    writeFileSync(join(dir, name), typeof body === 'string' ? body : JSON.stringify(body));
  }
  return dir;
}

const isBadCheckpoint = (path: string) => (error: unknown) =>
  error instanceof HatError && error.code === 'BAD_CHECKPOINT' && error.message.includes(path);

test('the context comes from whichever field the family uses, max_position_embeddings first', () => {
  assert.equal(configContext(dirWith({ 'config.json': { max_position_embeddings: 1024, n_ctx: 2048 } })), 1024);
  for (const field of ['n_positions', 'n_ctx', 'max_sequence_length', 'seq_length', 'max_seq_len', 'seq_len']) {
    assert.equal(configContext(dirWith({ 'config.json': { [field]: 300 } })), 300, field);
  }
  assert.equal(configContext(dirWith({ 'config.json': { seq_length: 'long', n_ctx: 0, seq_len: 64.5 } })), undefined);
  assert.equal(configContext(dirWith({})), undefined);
});

test('serve-cloud admits sessions at the context the device also sees (seq_length, not the 8,192 fallback)', () => {
  const manifest = readManifest(DEFAULT_SPLIT);
  const splitDir = dirWith({ 'config.json': { seq_length: 512 } });
  const limits = sessionLimits({ splitDir, maxSessions: 64, kvMemoryBytes: 1 << 30 }, manifest);
  assert.equal(limits.maxContext, 512);
  assert.equal(limits.contextFrom, 'config.json');
  assert.equal(configContext(splitDir), 512);
});

test('the fleet bench clamps prompts to a context named n_ctx, not only max_position_embeddings', () => {
  const clamped = clampLengths(dirWith({ 'config.json': { n_ctx: 256 } }), [128, 896], 64, 6);
  assert.deepEqual(clamped.lengths, [128, 185]);
  assert.match(clamped.note ?? '', /clamped to 185 tokens: the model's context \(config\.json\) is 256/);
});

test('a malformed config.json is BAD_CHECKPOINT naming it, wherever it is read', () => {
  const dir = dirWith({ 'config.json': '{"max_position_embeddings": 256,' });
  const path = join(dir, 'config.json');
  assert.throws(() => readModelConfig(dir), isBadCheckpoint(path));
  assert.throws(() => configSlidingWindow(dir), isBadCheckpoint(path));
  assert.throws(() => clampLengths(dir, [128], 64, 6), isBadCheckpoint(path));
  assert.throws(
    () => sessionLimits({ splitDir: dir, maxSessions: 4, kvMemoryBytes: 1 << 30 }, readManifest(DEFAULT_SPLIT)),
    isBadCheckpoint(path),
  );
  // hat bench reads it for its random-weights note (it was a bare JSON.parse: an INTERNAL SyntaxError, exit 70).
  assert.throws(() => randomWeightNotes(dir, readManifest(DEFAULT_SPLIT)), isBadCheckpoint(path));
});

test('a config file holding valid JSON that is not an object is BAD_CHECKPOINT, not a TypeError', () => {
  for (const body of ['null', '[1, 2]', '7']) {
    const dir = dirWith({ 'config.json': body, 'generation_config.json': body });
    assert.throws(() => readModelConfig(dir), isBadCheckpoint(join(dir, 'config.json')), body);
    assert.throws(() => configSpecialIds(dir), isBadCheckpoint(join(dir, 'generation_config.json')), body);
  }
});

test('a malformed generation_config.json is BAD_CHECKPOINT, not skipped (its eos ids would be lost)', () => {
  const dir = dirWith({ 'generation_config.json': '{"eos_token_id": [1, 3]', 'config.json': { eos_token_id: 1 } });
  assert.throws(() => configSpecialIds(dir), isBadCheckpoint(join(dir, 'generation_config.json')));
});

test('a sliding window counts unless the config turns it off (Qwen2 use_sliding_window: false)', () => {
  assert.equal(configSlidingWindow(dirWith({ 'config.json': { sliding_window: 4096 } })), 4096);
  assert.equal(
    configSlidingWindow(dirWith({ 'config.json': { sliding_window: 4096, use_sliding_window: false } })),
    undefined,
  );
  assert.equal(configSlidingWindow(dirWith({ 'config.json': { sliding_window: null } })), undefined);
});
