/** A trained adapter whose weights go to an external data file (big models) loads from the split it lands in. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { trainSplitAdapter } from '../../src/train-adapter/train-split.ts';
import { silentReporter } from '../../src/reporter.ts';
import { createSession } from '../../src/runtime/session.ts';
import { makeSmallSplit } from '../helpers/runtime-fixtures.ts';

test('an adapter with external data names the data file it is published beside, and loads', async () => {
  const { split } = await makeSmallSplit();
  await trainSplitAdapter(
    {
      splitDir: split,
      selfGenerate: 256,
      kind: 'attention',
      epochs: 1,
      lr: 2e-3,
      seq: 32,
      batch: 2,
      maxTokens: 150_000,
      maxSeconds: 60,
      ceWeight: 0.5,
      init: 'layer',
      maxDraft: 4,
      evalPrompts: 1,
      evalTokens: 16,
      seed: 1,
      inlineLimitBytes: 0, // every adapter counts as big
    },
    silentReporter,
  );
  const manifest = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8'));
  assert.deepEqual(manifest.adapter.dataFiles, ['adapter.onnx.data']);
  assert.ok(existsSync(join(split, 'adapter.onnx.data')));
  assert.deepEqual(
    readdirSync(split).filter((f) => f.includes('partial')),
    [],
  );
  const session = await createSession(join(split, 'adapter.onnx'), { threads: 1 }, 'adapter');
  await session.release();
});
