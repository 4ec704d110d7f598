/** KV layout discovery from session metadata, on decoders built in code (no graph parsing involved). */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kvLayoutOf } from '../../src/runtime/kv-cache.ts';
import { createSession } from '../../src/runtime/session.ts';
import { llamaConfig } from '../../src/models/config.ts';
import { writeLlamaOnnx } from '../../src/models/llama-onnx.ts';
import { randomWeights } from '../../src/models/weights.ts';
import { GraphBuilder, type Dim, type ElementType } from '../../src/onnx/graph-builder.ts';
import { encodeModel } from '../../src/onnx/model-io.ts';
import { HatError } from '../../src/errors.ts';

const work = mkdtempSync(join(tmpdir(), 'hat-kv-'));
after(() => rmSync(work, { recursive: true, force: true }));

const pair = (layer: number, past = 'past_key_values') => ({
  layer,
  pastKey: `${past}.${layer}.key`,
  pastValue: `${past}.${layer}.value`,
  presentKey: `present.${layer}.key`,
  presentValue: `present.${layer}.value`,
});

test("the layout of built Llama decoders: every layer's pair, the cache dtype, KV heads and head size", async () => {
  const cases = [
    { name: 'gqa-fp32', dtype: 'float32' as const, config: { hiddenSize: 32, heads: 4, kvHeads: 2, layers: 3 } },
    { name: 'mha-fp16', dtype: 'float16' as const, config: { hiddenSize: 48, heads: 4, kvHeads: 4, layers: 2 } },
    // Head size set apart from hidden / heads, as in Gemma-style configs.
    {
      name: 'mqa-wide-heads',
      dtype: 'float32' as const,
      config: { hiddenSize: 32, heads: 2, kvHeads: 1, layers: 1, headDim: 24 },
    },
  ];
  for (const { name, dtype, config } of cases) {
    const built = llamaConfig({ vocabSize: 40, intermediateSize: 64, ...config });
    const path = join(work, `${name}.onnx`);
    await writeLlamaOnnx(built, randomWeights({ seed: 1 }), path, { dtype });
    const layout = kvLayoutOf(await createSession(path));
    assert.deepEqual(
      layout,
      {
        pairs: Array.from({ length: built.layers }, (_, layer) => pair(layer)),
        dtype,
        kvHeads: built.kvHeads,
        headDim: built.headDim,
      },
      name,
    );
  }
});

/** A graph whose KV inputs pass straight to their presents: enough metadata for discovery, nothing else. */
async function kvSession(names: Array<{ past?: string; present?: string }>, type: ElementType, dims: Dim[]) {
  const b = new GraphBuilder('kv-only');
  b.input('input_ids', 'int64', [1, 'sequence']);
  for (const { past, present } of names) {
    const source = past ? b.input(past, type, dims) : b.op('Identity', ['input_ids']);
    if (present) b.output(source, past ? type : 'int64', past ? dims : [1, 'sequence'], present);
  }
  return createSession(encodeModel(b.build()), {}, 'kv-only model');
}

const layerNames = (layer: number, past = 'past_key_values') => [
  { past: `${past}.${layer}.key`, present: `present.${layer}.key` },
  { past: `${past}.${layer}.value`, present: `present.${layer}.value` },
];

test("pairs are ordered by layer whatever the graph's input order, and `past.N.*` names pair too", async () => {
  const shuffled = [...layerNames(2), ...layerNames(0), ...layerNames(1)];
  assert.deepEqual(kvLayoutOf(await kvSession(shuffled, 'float32', [1, 3, 'past', 8])), {
    pairs: [pair(0), pair(1), pair(2)],
    dtype: 'float32',
    kvHeads: 3,
    headDim: 8,
  });
  assert.deepEqual(kvLayoutOf(await kvSession(layerNames(0, 'past'), 'float16', [1, 1, 'past', 2])), {
    pairs: [pair(0, 'past')],
    dtype: 'float16',
    kvHeads: 1,
    headDim: 2,
  });
});

test('what is not a supported decoder cache is a HatError naming the model and the problem', async () => {
  const fails = (code: string, message: RegExp) => (error: unknown) => {
    assert.ok(error instanceof HatError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  };
  const noCache = await kvSession([{ present: 'logits' }], 'float32', []);
  assert.throws(
    () => kvLayoutOf(noCache),
    fails('NOT_A_DECODER', /^kv-only model has no past_key_values\.N\.key inputs$/),
  );
  const gap = await kvSession([...layerNames(0), ...layerNames(2)], 'float32', [1, 2, 'past', 4]);
  assert.throws(() => kvLayoutOf(gap), fails('NOT_A_DECODER', /layer 2 are incomplete or not numbered 0\.\.N-1/));
  const valueWithoutPresent = [layerNames(0)[0], { past: 'past_key_values.0.value' }];
  const noPresent = await kvSession(valueWithoutPresent, 'float32', [1, 2, 'past', 4]);
  assert.throws(() => kvLayoutOf(noPresent), fails('NOT_A_DECODER', /layer 0 are incomplete/));
  const symbolicHeads = await kvSession(layerNames(0), 'float32', [1, 'heads', 'past', 4]);
  assert.throws(
    () => kvLayoutOf(symbolicHeads),
    fails('UNSUPPORTED_MODEL', /past_key_values\.0\.key is not \[batch, kv_heads, past, head_dim\] with fixed heads/),
  );
  const threeD = await kvSession(layerNames(0), 'float32', [1, 'past', 4]);
  assert.throws(() => kvLayoutOf(threeD), fails('UNSUPPORTED_MODEL', /is not \[batch, kv_heads, past, head_dim\]/));
  const integer = await kvSession(layerNames(0), 'int32', [1, 2, 'past', 4]);
  assert.throws(() => kvLayoutOf(integer), fails('UNSUPPORTED_MODEL', /KV cache of type int32 is not supported/));
});
