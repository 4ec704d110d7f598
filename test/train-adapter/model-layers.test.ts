import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import { readLlama2cCheckpoint } from '../../src/models/llama2c.ts';
import { layerAttentionInit } from '../../src/train-adapter/init-from-model.ts';
import { adapterManifest } from '../../src/train-adapter/manifest-entry.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import { topTokens } from '../../src/train-adapter/output-head.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';
import { embed, headOf, runLayers } from './helpers/llama-layers.ts';

const stories = sharedFixture('llama2c-stories260k', 'stories260K.bin');

test(
  "adapter blocks built from a trained model's own layers reproduce its golden greedy tokens",
  { skip: stories.skip },
  async () => {
    const { config, weights } = readLlama2cCheckpoint(stories.path);
    const head = headOf(config, weights);
    const golden = [403, 407, 261, 378, 432, 383];
    const ids = [1];
    for (let step = 0; step < golden.length; step++) {
      const input = embed(config, weights, [ids]);
      const last = await runLayers(config, weights, input, 0, config.layers, jsMatMul);
      const { tokens } = await topTokens(head, last.subarray((ids.length - 1) * config.hiddenSize), jsMatMul);
      ids.push(tokens[0]);
    }
    assert.deepEqual(ids.slice(1), golden);
  },
);

test('initialising from a layer needs all its attention tensors; the manifest entry names the wiring', () => {
  assert.throws(
    () => layerAttentionInit(() => undefined, 3),
    (e: HatError) => e.code === 'UNSUPPORTED_MODEL',
  );
  const config = { hidden: 8, heads: 2, kvHeads: 1, headDim: 4, ropeTheta: 1e4, normEps: 1e-5 };
  const entry = adapterManifest({
    kind: 'attention',
    file: 'adapter.onnx',
    dataFiles: [],
    outputName: 'h_out',
    defaultThreshold: 0.4,
    metrics: {},
    config,
  });
  assert.equal(entry.output, 'h_out');
  assert.deepEqual((entry.kv as Array<{ pastKey: string }>)[0].pastKey, 'past_key_values.adapter.key');
  assert.equal(
    adapterManifest({
      kind: 'linear',
      file: 'adapter.onnx',
      dataFiles: [],
      outputName: 'h_out',
      defaultThreshold: 0,
      metrics: {},
    }).kv,
    undefined,
  );
});
