/** Layer recognition, cut planning and the privacy check, on graphs built in code and the shared fixtures. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, onnx } from '../../src/onnx/model-io.ts';
import { analyzeDecoder } from '../../src/split/decoder.ts';
import { planParts } from '../../src/split/parts.ts';
import { checkPrivacy } from '../../src/split/privacy.ts';
import { TOKEN_STAND_IN } from '../../src/split/prelude.ts';
import { chooseLayerCounts } from '../../src/split/split.ts';
import { HatError } from '../../src/errors.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';
import { buildTinyDecoder } from './tiny-decoders.ts';

test('layers are found from the KV anchors and the residual stream, with or without node names', () => {
  for (const named of [true, false]) {
    const structure = analyzeDecoder(buildTinyDecoder({ named, layers: 3 }));
    assert.equal(structure.layers.length, 3);
    assert.equal(structure.hiddenSize, 16);
    assert.equal(structure.boundaries.length, 4);
    // Every boundary is a residual Add (the embedding Gather for layer 0) and they follow one another.
    assert.deepEqual(
      structure.boundaries.map((b) => structure.index.nodes[b.node].opType),
      ['Gather', 'Add', 'Add', 'Add'],
    );
    assert.ok(
      structure.boundaries.every(
        (b, i) => i === 0 || structure.index.rank[b.node] > structure.index.rank[structure.boundaries[i - 1].node],
      ),
    );
  }
});

test('fused Skip residual norms are boundaries inside the node', () => {
  const structure = analyzeDecoder(buildTinyDecoder({ residual: 'fused-skip', layers: 3 }));
  assert.deepEqual(
    structure.boundaries.map((b) => b.fused),
    [false, true, true, true],
  );
  const plan = planParts(buildTinyDecoder({ residual: 'fused-skip', layers: 3 }), structure, 1, 1);
  // The producer side ends in the residual Add; the consumer side starts with a re-created norm on the wire.
  const wire = plan.boundaries.inputToMiddle;
  assert.equal(plan.parts.input.graph.node!.find((n) => n.output!.includes(wire))!.opType, 'Add');
  const norm = plan.parts.middle.graph.node!.find(
    (n) => n.input![0] === wire && n.opType === 'SimplifiedLayerNormalization',
  );
  assert.ok(norm, 'middle part re-creates the norm');
  assert.ok(!plan.parts.middle.graph.node!.some((n) => n.opType === 'Gather' && n.input!.includes('embed.weight')));
});

const genai = sharedFixture('genai-tiny-llama-fp16', 'model.onnx');
test(
  'genai fixture: the mask prelude in the middle part reads its shape from the hidden state, not input_ids',
  { skip: genai.skip },
  async () => {
    const { model } = await loadModel(genai.path);
    const plan = planParts(model, analyzeDecoder(model), 1, 0);
    const middle = plan.parts.middle.graph;
    assert.ok(!middle.node!.some((n) => n.input!.includes('input_ids')));
    assert.ok(middle.node!.some((n) => n.opType === 'Shape' && n.input![0] === plan.boundaries.inputToMiddle));
    // The prelude reads the past length from the middle's own cache, not layer 0's.
    assert.ok(!middle.node!.some((n) => n.input!.includes('past_key_values.0.key')));
    assert.deepEqual(plan.parts.middle.preludeInputs.sort(), ['attention_mask', 'position_ids']);
  },
);

test('the privacy check fails a part whose output depends on token values', () => {
  const { parts } = planParts(buildTinyDecoder(), analyzeDecoder(buildTinyDecoder()), 2, 0);
  assert.equal(checkPrivacy([parts.middle, parts.output]).passed, true);
  const leaky = {
    ...parts.output,
    graph: onnx.GraphProto.create({
      ...parts.output.graph,
      node: [
        ...parts.output.graph.node!,
        onnx.NodeProto.create({
          opType: 'Cast',
          input: [TOKEN_STAND_IN],
          output: ['leak'],
          attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: 1 }],
        }),
      ],
      output: [...parts.output.graph.output!, { name: 'leak' }],
    }),
  };
  const result = checkPrivacy([leaky]);
  assert.equal(result.passed, false);
  assert.ok(result.checks.some((c) => c.startsWith('FAIL') && c.includes('leak')));
});

test('default layer counts: K = 2, lowered so the middle keeps a layer; too many is an error', () => {
  assert.deepEqual(chooseLayerCounts(32, undefined, undefined), [2, 0]);
  assert.deepEqual(chooseLayerCounts(2, undefined, undefined), [1, 0]);
  assert.deepEqual(chooseLayerCounts(3, undefined, 1), [1, 1]);
  assert.throws(
    () => chooseLayerCounts(4, 3, 1),
    (e: HatError) => e.code === 'BAD_SPLIT',
  );
});
