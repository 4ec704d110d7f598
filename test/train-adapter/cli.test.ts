/** `hat train-adapter` end to end through the real CLI, on a small split built in code. */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HAT_BIN } from '../../src/apps/spawn-cloud.ts';
import { makeSmallSplit } from '../helpers/runtime-fixtures.ts';

const run = promisify(execFile);
let split: string;

before(async () => {
  ({ split } = await makeSmallSplit());
});

test('trains on self-generated text, evaluates the baselines, writes adapter.onnx and the manifest entry', async () => {
  const { stdout } = await run(process.execPath, [
    HAT_BIN,
    'train-adapter',
    split,
    '--self-generate',
    '512',
    '--seq',
    '32',
    '--batch',
    '2',
    '--epochs',
    '2',
    '--eval-prompts',
    '2',
    '--eval-tokens',
    '16',
    '--json',
  ]);
  const result = JSON.parse(stdout);
  assert.deepEqual(
    result.rows.map((r: { adapter: string }) => r.adapter.split(' ')[0]),
    ['none', 'linear', 'attention'],
  );
  assert.equal(result.sweep.length, 5);
  const manifest = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8'));
  assert.equal(manifest.adapter.kind, 'attention');
  assert.equal(manifest.adapter.defaultThreshold, result.threshold);
  assert.equal(manifest.adapter.kv.length, 1);
  assert.ok(existsSync(join(split, 'adapter.onnx')));
  assert.ok(!existsSync(join(split, '.adapter.onnx.partial')));
});

test('a missing corpus is a one-line error and leaves the split untouched', async () => {
  const before = readFileSync(join(split, 'manifest.json'), 'utf8');
  await assert.rejects(
    run(process.execPath, [HAT_BIN, 'train-adapter', split, '--corpus', '/nonexistent/corpus.txt']),
    (error: { code: number; stderr: string }) => {
      assert.equal(error.code, 1);
      assert.match(error.stderr.trim().split('\n').pop()!, /^error\[(FILE_NOT_FOUND|BAD_MANIFEST)\]/);
      return true;
    },
  );
  assert.equal(readFileSync(join(split, 'manifest.json'), 'utf8'), before);
});

test('a split with decoder layers in its output part is refused at once, with a hint that works', async () => {
  const { dir } = await makeSmallSplit(); // its model.onnx, split again with one layer in the output part
  const withLayers = join(dir, 'split-j1');
  await run(process.execPath, [HAT_BIN, 'split', join(dir, 'model.onnx'), '--out', withLayers, '--output-layers', '1']);
  const before = readFileSync(join(withLayers, 'manifest.json'), 'utf8');
  // Both kinds: the hint used to suggest --kind linear, which failed the same way.
  for (const kind of ['attention', 'linear'])
    await assert.rejects(
      run(process.execPath, [HAT_BIN, 'train-adapter', withLayers, '--kind', kind, '--self-generate', '64']),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 1);
        const line = error.stderr.trim().split('\n').pop()!;
        assert.match(line, /^error\[UNSUPPORTED_MODEL\]: .*output part holds decoder layers 3–3 \(--output-layers 1\)/);
        assert.match(line, /split the model again without --output-layers/);
        assert.doesNotMatch(line, /--kind linear/);
        assert.doesNotMatch(error.stderr, /self-generat/, 'refused before any work');
        return true;
      },
    );
  assert.equal(readFileSync(join(withLayers, 'manifest.json'), 'utf8'), before);
  assert.ok(!existsSync(join(withLayers, 'adapter.onnx')));
});
