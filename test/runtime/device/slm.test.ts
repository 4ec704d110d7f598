/**
 * The device's small model (input part → adapter → output part) as a CausalLm. With the identity adapter it is
 * the decoder's first layers under the decoder's own head, so a Llama built with only those layers (same seeded
 * weights, which are drawn per tensor name) is an independent reference. With an attention adapter, which has
 * its own KV cache, stepping and rolling back must equal a model that never went further.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SlmCausalLm } from '../../../src/runtime/device/slm.ts';
import { OnnxCausalLm, type CausalLm, type StepOutput } from '../../../src/runtime/full-model.ts';
import { writeLlamaOnnx } from '../../../src/models/llama-onnx.ts';
import { randomWeights } from '../../../src/models/weights.ts';
import { splitModel } from '../../../src/split/split.ts';
import type { SplitManifest } from '../../../src/split/manifest.ts';
import { silentReporter } from '../../../src/reporter.ts';
import { initAdapterParams, type AttentionAdapterConfig } from '../../../src/train-adapter/attention-adapter.ts';
import { exportAdapter } from '../../../src/train-adapter/export-onnx.ts';
import { adapterManifest } from '../../../src/train-adapter/manifest-entry.ts';
import { HatError } from '../../../src/errors.ts';
import { addIdentityAdapter, makeSmallSplit, SMALL_LLAMA } from '../../helpers/runtime-fixtures.ts';

const SEED = 3; // makeSmallSplit's
const INPUT_LAYERS = 2; // hat split's default
let dir: string;
let model: string;
let split: string;
let firstLayers: string;

before(async () => {
  ({ dir, model, split } = await makeSmallSplit(SMALL_LLAMA, SEED));
  const manifest = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8')) as SplitManifest;
  assert.deepEqual(manifest.parts.input.layers, [0, INPUT_LAYERS]); // [first, end)
  firstLayers = join(dir, 'first-layers.onnx');
  await writeLlamaOnnx({ ...SMALL_LLAMA, layers: INPUT_LAYERS }, randomWeights({ seed: SEED, std: 0.3 }), firstLayers);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function maxAbsDiff(a: StepOutput, b: StepOutput): number {
  assert.deepEqual([a.rows, a.cols], [b.rows, b.cols]);
  let worst = 0;
  for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
  return worst;
}

/** The same calls on both models; every step's logits must agree within `tolerance`. */
async function assertSameSteps(actual: CausalLm, expected: CausalLm, tolerance: number): Promise<void> {
  const script: Array<number[] | { truncate: number }> = [
    [1, 5, 9, 22, 13],
    [40],
    [2, 7],
    { truncate: 5 },
    [31],
    [17, 8, 8],
    { truncate: 0 },
    [3, 3],
  ];
  for (const [i, action] of script.entries()) {
    if (Array.isArray(action)) {
      const diff = maxAbsDiff(await actual.step(action), await expected.step(action));
      assert.ok(diff < tolerance, `action ${i} (step ${action}): max |Δlogit| ${diff}`);
    } else {
      actual.truncate(action.truncate);
      expected.truncate(action.truncate);
    }
    assert.equal(actual.length, expected.length, `length after action ${i}`);
  }
}

test(
  'with the identity adapter the small model is the decoder cut after its input layers, ' + 'in step and truncate',
  async () => {
    addIdentityAdapter(split);
    const slm = await SlmCausalLm.open(split);
    const reference = await OnnxCausalLm.open(firstLayers);
    assert.equal(slm.vocabSize, SMALL_LLAMA.vocabSize);
    assert.equal(slm.length, 0);
    await assertSameSteps(slm, reference, 1e-4);
    // A tolerance that tells models apart: the full decoder gives other logits for the same ids.
    const full = await OnnxCausalLm.open(model);
    slm.truncate(0);
    assert.ok(maxAbsDiff(await slm.step([1, 5, 9]), await full.step([1, 5, 9])) > 0.1);
    await slm.release();
  },
);

test(
  'with an attention adapter (its own KV cache), ' + 'rolled-back steps equal a small model that never went further',
  async () => {
    const manifestPath = join(split, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as SplitManifest;
    const config: AttentionAdapterConfig = {
      hidden: SMALL_LLAMA.hiddenSize,
      heads: 4,
      kvHeads: 2,
      headDim: 8,
      ropeTheta: 10000,
      normEps: 1e-5,
    };
    // A large output scale, so the adapter changes the logits (a near-identity one would hide a stale cache).
    const params = initAdapterParams(config, { seed: 7, outputScale: 3 });
    const outputName = manifest.boundaries.middleToOutput;
    const adapter = { kind: 'attention' as const, params, config };
    const dataFiles = await exportAdapter(join(split, 'adapter.onnx'), adapter, { outputName });
    manifest.adapter = adapterManifest({
      kind: 'attention',
      file: 'adapter.onnx',
      dataFiles,
      outputName,
      defaultThreshold: 0.6,
      metrics: {},
      config,
    });
    writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
    const slm = await SlmCausalLm.open(split);
    const fresh = await SlmCausalLm.open(split);
    // Rolled back and re-stepped, against one prefill of what was kept plus the new tokens.
    const kept = [1, 5, 9, 22, 13],
      dropped = [40, 2, 7],
      next = [31, 17];
    await slm.step(kept);
    await slm.step(dropped);
    slm.truncate(kept.length);
    const incremental = await slm.step(next);
    const prefill = await fresh.step([...kept, ...next]);
    const tail = { data: prefill.data.subarray(kept.length * prefill.cols), rows: next.length, cols: prefill.cols };
    assert.ok(maxAbsDiff(incremental, tail) < 1e-4, `max |Δlogit| ${maxAbsDiff(incremental, tail)}`);
    assert.equal(slm.length, kept.length + next.length);
    // The adapter matters: without it (the identity adapter's small model) the logits differ.
    const withoutAdapter = await OnnxCausalLm.open(firstLayers);
    assert.ok(maxAbsDiff(await withoutAdapter.step([...kept, ...next]), prefill) > 0.1);
    for (const m of [slm, fresh]) await m.release();
  },
);

test('a split whose output part holds decoder layers has no small model: a one-line UNSUPPORTED_MODEL', async () => {
  const withOutputLayers = join(dir, 'split-output-layers');
  await splitModel({ model, out: withOutputLayers, outputLayers: 1 }, silentReporter);
  addIdentityAdapter(withOutputLayers);
  await assert.rejects(SlmCausalLm.open(withOutputLayers), (error: unknown) => {
    assert.ok(error instanceof HatError);
    assert.equal(error.code, 'UNSUPPORTED_MODEL');
    assert.match(error.message, /^the small model needs an output part without decoder layers/);
    return true;
  });
});
