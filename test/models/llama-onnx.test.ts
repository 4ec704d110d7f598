import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { llamaConfig, type LlamaConfig } from '../../src/models/config.ts';
import { materialize, mapSource, randomWeights, type WeightMap } from '../../src/models/weights.ts';
import { writeLlamaOnnx } from '../../src/models/llama-onnx.ts';
import { referenceForward } from '../../src/models/reference.ts';
import { OnnxCausalLm } from '../../src/runtime/full-model.ts';
import { createSession, int64Tensor, zerosTensor, type Feeds } from '../../src/runtime/session.ts';
import { float16ToFloat32, float32ToFloat16 } from '../../src/onnx/float16.ts';
import { checkExternalData, isExternal, loadModel } from '../../src/onnx/model-io.ts';
import { weightSpecs } from '../../src/models/config.ts';

// GQA (4 query heads over 2 KV heads), tied head and Qwen-style q/k/v biases in one; plain MHA in the other.
const gqaTied = llamaConfig({
  vocabSize: 48,
  hiddenSize: 32,
  intermediateSize: 40,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  tiedEmbeddings: true,
  attentionBias: true,
  ropeTheta: 500,
});
const mhaSeparate = llamaConfig({
  vocabSize: 40,
  hiddenSize: 24,
  intermediateSize: 36,
  layers: 3,
  heads: 3,
  kvHeads: 3,
});
const ids = [3, 17, 5, 29, 11, 2];
const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

async function build(config: LlamaConfig, dtype: 'float32' | 'float16', externalData = false) {
  const weights = materialize(config, randomWeights({ seed: 7, std: 0.15 }));
  const dir = mkdtempSync(join(tmpdir(), 'hat-llama-'));
  dirs.push(dir);
  const built = await writeLlamaOnnx(config, mapSource(weights), join(dir, 'model.onnx'), { dtype, externalData });
  return { weights, built, model: await OnnxCausalLm.open(built.modelPath) };
}

const roundToHalf = (weights: WeightMap): WeightMap =>
  new Map([...weights].map(([name, values]) => [name, float16ToFloat32(float32ToFloat16(values))]));

for (const [label, config] of [
  ['GQA, tied head, qkv bias', gqaTied],
  ['MHA, separate head', mhaSeparate],
] as const) {
  test(`fp32 ONNX decoder matches the TypeScript reference forward (${label})`, async () => {
    const { weights, model } = await build(config, 'float32');
    const expected = referenceForward(config, weights, ids);
    const actual = await model.step(ids);
    assert.equal(actual.cols, config.vocabSize);
    assert.ok(maxAbsDiff(actual.data, expected) < 1e-4, `max diff ${maxAbsDiff(actual.data, expected)}`);
    await model.release();
  });
}

test('fp16 ONNX decoder matches the reference forward within fp16 tolerance', async () => {
  const { weights, model } = await build(gqaTied, 'float16');
  const expected = referenceForward(gqaTied, roundToHalf(weights), ids);
  const actual = await model.step(ids);
  const diff = maxAbsDiff(actual.data, expected);
  assert.ok(diff < 2e-2, `max diff ${diff}`);
  await model.release();
});

test('multi-token steps on a non-empty cache give the same logits as one prefill', async () => {
  for (const dtype of ['float32', 'float16'] as const) {
    const { model } = await build(gqaTied, dtype);
    const prefill = (await model.step(ids)).data;
    model.truncate(0);
    const first = await model.step(ids.slice(0, 2));
    const second = await model.step(ids.slice(2, 5)); // 3 new tokens over a past of 2
    const third = await model.step(ids.slice(5)); // then a single token over a past of 5
    assert.equal(model.length, ids.length);
    const stepped = new Float32Array([...first.data, ...second.data, ...third.data]);
    const diff = maxAbsDiff(stepped, prefill);
    assert.ok(diff < (dtype === 'float32' ? 1e-5 : 1e-2), `${dtype}: max diff ${diff}`);

    // Rolling back two positions and re-running them reproduces their logits (speculative rollback).
    model.truncate(4);
    const replay = await model.step(ids.slice(4));
    assert.ok(maxAbsDiff(replay.data, prefill.subarray(4 * gqaTied.vocabSize)) < (dtype === 'float32' ? 1e-5 : 1e-2));
    await model.release();
  }
});

test('a model written with external data loads from its folder and computes the same logits', async () => {
  const { weights, built, model } = await build(mhaSeparate, 'float32', true);
  assert.ok(built.dataPath && existsSync(built.dataPath));
  const loaded = await loadModel(built.modelPath);
  assert.equal(checkExternalData(loaded).size, 1);
  const externalTensors = loaded.model.graph!.initializer!.filter(isExternal).length;
  assert.equal(
    externalTensors,
    weightSpecs(mhaSeparate).filter((s) => s.kind !== 'norm').length,
    'every matrix lives in the data file',
  );
  const diff = maxAbsDiff((await model.step(ids)).data, referenceForward(mhaSeparate, weights, ids));
  assert.ok(diff < 1e-4, `max diff ${diff}`);
  await model.release();
});

test('left padding: masked positions change nothing for the real tokens', async () => {
  const { built, model } = await build(gqaTied, 'float32');
  const real = [7, 21, 4];
  const expected = (await model.step(real)).data;
  await model.release();
  const session = await createSession(built.modelPath);
  const empty = zerosTensor('float32', [1, gqaTied.kvHeads, 0, gqaTied.headDim]);
  const feeds: Feeds = {
    input_ids: int64Tensor([0, 0, ...real], [1, 5]),
    attention_mask: int64Tensor([0, 0, 1, 1, 1], [1, 5]),
    // Hugging Face's convention: cumsum(mask) − 1, and 1 where the mask is 0.
    position_ids: int64Tensor([1, 1, 0, 1, 2], [1, 5]),
  };
  for (let l = 0; l < gqaTied.layers; l++)
    feeds[`past_key_values.${l}.key`] = feeds[`past_key_values.${l}.value`] = empty;
  const logits = (await session.run(feeds)).logits.data as Float32Array;
  const diff = maxAbsDiff(logits.subarray(2 * gqaTied.vocabSize), expected);
  assert.ok(diff < 1e-5, `max diff ${diff}`);
  await session.release();
});
