/**
 * The repeat_kv rewrite (src/split/grouped-attention.ts) on hand-written node lists: which widenings it takes
 * and which it leaves. That the rewritten parts compute the model is checked where real exports are split
 * (families.test.ts: qwen2, mistral, gemma; the default model's verification in equivalence tests).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  onnx,
  pointAtExternalData,
  tensorBytes,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
} from '../../src/onnx/model-io.ts';
import { groupQueriesOverCache } from '../../src/split/grouped-attention.ts';

const node = (opType: string, input: string[], output: string, attribute: AttributeProto[] = []): NodeProto =>
  onnx.NodeProto.create({ name: output, opType, input, output: [output], attribute });
const perm = onnx.AttributeProto.create({
  name: 'perm',
  type: onnx.AttributeProto.AttributeType.INTS,
  ints: [0, 1, 3, 2],
});
const axes = (values: number[]): TensorProto =>
  onnx.TensorProto.create({
    name: 'axes',
    dataType: onnx.TensorProto.DataType.INT64,
    dims: [values.length],
    int64Data: values,
  });

/** Unsqueeze axes stored in a data file (not read by the rewrite: the layer is left as exported). */
function externalAxes(): TensorProto {
  const tensor = axes([2]);
  pointAtExternalData(tensor, { location: 'missing.data', offset: 0, length: 8 });
  return tensor;
}

/** One layer's attention as torch exports it: keys and values widened, scores and outputs read them. */
function layer(extra: NodeProto[] = []): NodeProto[] {
  return [
    node('Unsqueeze', ['present.key', 'axes'], 'k_unsqueezed'),
    node('Expand', ['k_unsqueezed', 'k_shape'], 'k_expanded'),
    node('Reshape', ['k_expanded', 'wide_shape'], 'k_wide'),
    node('Transpose', ['k_wide'], 'k_wide_t', [perm]),
    node('MatMul', ['q', 'k_wide_t'], 'scores'),
    node('Unsqueeze', ['present.value', 'axes'], 'v_unsqueezed'),
    node('Expand', ['v_unsqueezed', 'v_shape'], 'v_expanded'),
    node('Reshape', ['v_expanded', 'wide_shape'], 'v_wide'),
    node('MatMul', ['probs', 'v_wide'], 'attended'),
    ...extra,
  ];
}

const kvHeadsOf = (tensor: string) => (tensor.startsWith('present.') ? 2 : undefined);

test('both MatMuls of a widened layer read the cache as it is, under their own output names', () => {
  const result = groupQueriesOverCache(layer(), new Map([['axes', axes([2])]]), kvHeadsOf);
  assert.equal(result.rewritten, 2);
  const producerOf = (name: string) => result.nodes.find((n) => n.output?.includes(name));
  assert.equal(producerOf('scores')?.opType, 'Reshape');
  assert.equal(producerOf('attended')?.opType, 'Reshape');
  const products = result.nodes.filter((n) => n.opType === 'MatMul');
  const keys = result.nodes.find((n) => n.output?.[0] === products[0].input?.[1]);
  assert.deepEqual(keys?.input, ['present.key'], 'the scores read the transposed cache, not the widened one');
  assert.equal(products[1].input?.[1], 'present.value');
  const grouped = result.initializers.find(
    (t) => t.name === result.nodes.find((n) => n.input?.[0] === 'q')?.input?.[1],
  );
  const bytes = tensorBytes({ dir: '' }, grouped!);
  const values = [...new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)].map(Number);
  assert.deepEqual(values, [0, 2, -1, 0], 'queries regrouped per KV head');
});

test('a widening read by anything but MatMuls, on another axis, or of a non-cache tensor is left as exported', () => {
  const cases: [string, NodeProto[], Map<string, TensorProto>, typeof kvHeadsOf][] = [
    ['another reader', layer([node('Identity', ['v_wide'], 'leak')]), new Map([['axes', axes([2])]]), kvHeadsOf],
    ['axis 1', layer(), new Map([['axes', axes([1])]]), kvHeadsOf],
    ['not a cache', layer(), new Map([['axes', axes([2])]]), () => undefined],
    ['axes in external data', layer(), new Map([['axes', externalAxes()]]), kvHeadsOf],
  ];
  for (const [label, nodes, initializers, heads] of cases) {
    const result = groupQueriesOverCache(nodes, initializers, heads);
    const expected = label === 'another reader' ? 1 : 0; // the keys of that layer are still taken
    assert.equal(result.rewritten, expected, label);
    if (label === 'another reader')
      assert.ok(
        result.nodes.some((n) => n.input?.[1] === 'v_wide'),
        label,
      );
    if (expected === 0) assert.equal(result.nodes, nodes, label);
  }
});
