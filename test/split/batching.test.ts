/**
 * How `hat split` decides whether serve-cloud may batch sessions (src/split/batching.ts): each rule on a small
 * graph made to break it, the recorded manifest field, and the downgrade when multi-token steps fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../../src/onnx/graph-builder.ts';
import { writeLlamaOnnx } from '../../src/models/llama-onnx.ts';
import { randomWeights } from '../../src/models/weights.ts';
import { onnx } from '../../src/onnx/model-io.ts';
import { decideBatching } from '../../src/split/batching.ts';
import { splitModel } from '../../src/split/split.ts';
import { silentReporter } from '../../src/reporter.ts';
import { HAT_BIN } from '../../src/apps/spawn-cloud.ts';
import { toyMiddleModel } from '../helpers/toy-split.ts';
import { SMALL_LLAMA } from '../helpers/runtime-fixtures.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';

const KV = [
  {
    layer: 0,
    pastKey: 'past_key',
    pastValue: 'past_value',
    presentKey: 'present_key',
    presentValue: 'present_value',
  },
];

/**
 * One attention over a one-head cache: scores = h · [past; h]ᵀ (+ the mask's bias), softmax, times [past; h].
 * `rotary` multiplies h by sin(positions) first, positions taken from position_ids or from the sequence length.
 */
function attentionGraph(options: { mask: boolean; rotary?: 'position_ids' | 'shape'; batch?: number }) {
  const b = new GraphBuilder('attention');
  const batch = options.batch ?? 'batch';
  let h = b.input('h', 'float32', [batch, 'seq', 4]);
  const mask = b.input('attention_mask', 'int64', [batch, 'total']);
  const past = b.input('past_key', 'float32', [batch, 1, 'past', 4]);
  const pastValue = b.input('past_value', 'float32', [batch, 1, 'past', 4]);
  if (options.rotary) {
    const positions =
      options.rotary === 'position_ids'
        ? b.input('position_ids', 'int64', [batch, 'seq'])
        : b.op('Range', [b.int64([0], []), b.op('Gather', [b.op('Shape', [h]), b.int64([1], [])]), b.int64([1], [])]);
    const angle = b.op('Cast', [positions], { attributes: { to: 1 } });
    h = b.op('Mul', [h, b.op('Unsqueeze', [b.op('Sin', [angle]), b.int64([-1])])]);
  }
  const key = b.op('Concat', [past, b.op('Unsqueeze', [h, b.int64([1])])], { attributes: { axis: 2 } });
  const value = b.op('Concat', [pastValue, b.op('Unsqueeze', [h, b.int64([1])])], { attributes: { axis: 2 } });
  const keyT = b.op('Transpose', [key], { attributes: { perm: [0, 1, 3, 2] } });
  let scores = b.op('MatMul', [b.op('Unsqueeze', [h, b.int64([1])]), keyT]);
  if (options.mask) {
    const bias = b.op('Mul', [b.op('Cast', [mask], { attributes: { to: 1 } }), b.scalar(1e4, 'float32')]);
    scores = b.op('Add', [scores, b.op('Unsqueeze', [bias, b.int64([1, 2])])]);
  }
  const out = b.op('MatMul', [b.op('Softmax', [scores], { attributes: { axis: -1 } }), value]);
  b.output(b.op('Squeeze', [out, b.int64([1])]), 'float32', [batch, 'seq', 4], 'h_out');
  b.output(key, 'float32', [batch, 1, 'total', 4], 'present_key');
  b.output(value, 'float32', [batch, 1, 'total', 4], 'present_value');
  return b.build().graph!;
}

test('padded when the mask reaches every attention and rotary positions come from position_ids', () => {
  assert.equal(decideBatching(attentionGraph({ mask: true }), KV).mode, 'padded');
  const rotary = decideBatching(attentionGraph({ mask: true, rotary: 'position_ids' }), KV);
  assert.equal(rotary.mode, 'padded');
  assert.equal(rotary.reason, 'every attention reads attention_mask; rotary positions from position_ids');
});

test('none when padding could be attended to, positions would shift, or there is no batch dimension', () => {
  const unmasked = decideBatching(attentionGraph({ mask: false }), KV);
  assert.equal(unmasked.mode, 'none');
  assert.match(unmasked.reason, /does not read attention_mask/);
  const fromShape = decideBatching(attentionGraph({ mask: true, rotary: 'shape' }), KV);
  assert.equal(fromShape.mode, 'none');
  assert.match(fromShape.reason, /Sin.* does not read position_ids/);
  const fixed = decideBatching(attentionGraph({ mask: true, batch: 1 }), KV);
  assert.deepEqual(fixed, { mode: 'none', reason: "input 'h' fixes the batch size to 1" });
  // The toy middle part the server tests use: batch 1 and no attention at all.
  const toyGraph = onnx.ModelProto.decode(toyMiddleModel()).graph!;
  const toy = decideBatching(toyGraph, [{ ...KV[0], pastKey: 'past_key_values.1.key' }]);
  assert.equal(toy.mode, 'none');
});

test('hat split records the decision in the manifest; hat split and hat inspect print it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-batching-'));
  const model = join(dir, 'model.onnx');
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 1, std: 0.15 }), model);
  const { manifest } = await splitModel({ model, out: join(dir, 'split') }, silentReporter);
  assert.equal(manifest.batching?.mode, 'padded');
  assert.equal(manifest.batching?.inPlace, true, 'no sliding window: batches of the same sessions are fed in place');
  const hat = (...args: string[]) => execFileSync(process.execPath, [HAT_BIN, ...args], { encoding: 'utf8' });
  const line =
    'padded — every attention reads attention_mask; rotary positions from position_ids; ' +
    'the same sessions batched again are fed in place';
  assert.ok(hat('split', model, '--out', join(dir, 'cli-split')).includes(`serve-cloud batching: ${line}`));
  assert.match(hat('inspect', model, '--no-probe'), new RegExp(`^batching +${line}$`, 'm'));
});

const gpt2 = sharedFixture('hf-tiny-gpt2-opset17', 'model.onnx');
test('parts that fail a multi-token step on a cache are never batched', { skip: gpt2.skip }, async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'hat-batching-')), 'split');
  const { manifest } = await splitModel({ model: gpt2.path, out, repairMask: false }, silentReporter);
  assert.equal(manifest.multiTokenCachedSteps, false);
  assert.equal(manifest.batching?.mode, 'none');
  assert.equal(manifest.batching?.reason, 'the parts fail a multi-token step on a non-empty cache');
});
