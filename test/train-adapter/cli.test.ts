/** `hat train-adapter` end to end through the real CLI, on a small split built in code. */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HAT_BIN } from '../../src/apps/spawn-cloud.ts';
import { savedAdapterWeights } from '../../src/train-adapter/layer-weights.ts';
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

test("--init adapter continues the split's adapter from its weights and keeps its training record", async () => {
  const before = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8')).adapter;
  const weightsBefore = await savedAdapterWeights(join(split, 'adapter.onnx'));
  assert.ok(weightsBefore, 'the first test trained an adapter');
  // The smallest learning rate moves no weight by more than ~steps × lr; a random or layer start differs by O(0.1).
  await run(process.execPath, [
    HAT_BIN,
    'train-adapter',
    split,
    '--init',
    'adapter',
    '--lr',
    '1e-7',
    ...['--self-generate', '256', '--seq', '32', '--batch', '2', '--epochs', '1'],
    ...['--eval-prompts', '1', '--eval-tokens', '8', '--json'],
  ]);
  const after = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8')).adapter;
  const weightsAfter = (await savedAdapterWeights(join(split, 'adapter.onnx')))!;
  for (const [name, values] of Object.entries(weightsBefore)) {
    const moved = values.reduce((worst, v, i) => Math.max(worst, Math.abs(v - weightsAfter[name as 'wq'][i])), 0);
    assert.ok(moved < 1e-4, `${name} moved ${moved}`);
  }
  assert.match(after.metrics.training.initialisedFrom, /continued/);
  assert.deepEqual(after.metrics.training.continued, { training: before.metrics.training, data: before.metrics.data });
});

test('--init adapter is refused, before any work, for a linear adapter or a split without one', async () => {
  const { split: bare } = await makeSmallSplit();
  const cases: Array<[string, string[], RegExp]> = [
    [split, ['--kind', 'linear'], /only an attention adapter is trained in steps/],
    [bare, [], /has no adapter yet/],
  ];
  for (const [dir, extra, problem] of cases) {
    const manifestBefore = readFileSync(join(dir, 'manifest.json'), 'utf8');
    await assert.rejects(
      run(process.execPath, [HAT_BIN, 'train-adapter', dir, '--init', 'adapter', '--self-generate', '64', ...extra]),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 1);
        assert.match(error.stderr.trim().split('\n').pop()!, /^error\[BAD_OPTION\]: --init adapter: /);
        assert.match(error.stderr, problem);
        assert.doesNotMatch(error.stderr, /self-generat/, 'refused before any work');
        return true;
      },
    );
    assert.equal(readFileSync(join(dir, 'manifest.json'), 'utf8'), manifestBefore);
  }
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
