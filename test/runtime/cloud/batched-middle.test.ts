/**
 * Batched middle runs equal solo runs: ragged pasts, ragged row counts, rollbacks and new sessions in one padded
 * run give every session the outputs and the cache it gets alone (fp32 ≤ 1e-5, fp16 ≤ 2e-3), on hat's own
 * builder and on the shared fixtures' splits (skipped without ../shared).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLlamaOnnx } from '../../../src/models/llama-onnx.ts';
import { randomWeights } from '../../../src/models/weights.ts';
import { splitModel } from '../../../src/split/split.ts';
import { silentReporter } from '../../../src/reporter.ts';
import { SMALL_LLAMA } from '../../helpers/runtime-fixtures.ts';
import { repoRoot, sharedFixture } from '../../helpers/shared-fixtures.ts';
import { batchedVersusSolo, RAGGED_ROUNDS } from './batch-exactness.ts';

/** A split of a small GQA Llama from hat's builder (weights std 0.15, as the builder's own tests use). */
async function builderSplit(dtype: 'float32' | 'float16'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), `hat-batch-${dtype}-`));
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 3, std: 0.15 }), join(dir, 'model.onnx'), { dtype });
  const { manifest } = await splitModel({ model: join(dir, 'model.onnx'), out: join(dir, 'split') }, silentReporter);
  assert.equal(manifest.hidden.dtype, dtype);
  return join(dir, 'split');
}

for (const [dtype, tolerance] of [['float32', 1e-5], ['float16', 2e-3]] as const) {
  test(`builder model, ${dtype}: a padded batch equals each session alone within ${tolerance}`, async (t) => {
    const { maxAbsError, batchedRuns } = await batchedVersusSolo(await builderSplit(dtype), 'left');
    t.diagnostic(`max |batched − solo| = ${maxAbsError.toExponential(2)}`);
    assert.equal(batchedRuns, RAGGED_ROUNDS.length, 'every round ran as one padded batch');
    assert.ok(maxAbsError <= tolerance, `max abs error ${maxAbsError}`);
  });
}

test('the shipped default split batches exactly', async (t) => {
  const { maxAbsError, batchedRuns } = await batchedVersusSolo(join(repoRoot, 'fixtures', 'default-split'), 'left');
  t.diagnostic(`max |batched − solo| = ${maxAbsError.toExponential(2)}`);
  assert.equal(batchedRuns, RAGGED_ROUNDS.length);
  assert.ok(maxAbsError <= 1e-5, `max abs error ${maxAbsError}`);
});

for (const [name, tolerance] of [['hf-tiny-gpt2-opset17', 1e-5], ['genai-tiny-llama-fp16', 2e-3]] as const) {
  const fixture = sharedFixture(name, 'model.onnx');
  test(`the ${name} split batches exactly`, { skip: fixture.skip }, async (t) => {
    const split = join(mkdtempSync(join(tmpdir(), 'hat-batch-fx-')), 'split');
    await splitModel({ model: fixture.path, out: split }, silentReporter);
    const { maxAbsError, batchedRuns } = await batchedVersusSolo(split, 'left');
    t.diagnostic(`max |batched − solo| = ${maxAbsError.toExponential(2)}`);
    assert.equal(batchedRuns, RAGGED_ROUNDS.length);
    assert.ok(maxAbsError <= tolerance, `max abs error ${maxAbsError}`);
  });
}
