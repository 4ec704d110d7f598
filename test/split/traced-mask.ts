/**
 * Variants of the family exports whose mask prelude breaks multi-token steps on a non-empty cache, as traced
 * exports' do (both shared ONNX fixtures fail with "invalid expand shape"): the mask tensor the layers read gets
 * `+ Expand(zeros[seq, total], [1, 1, seq, seq])` — harmless on a prefill (total = seq) and on single-token steps
 * (seq = 1), an error for seq > 1 over a cache. Optionally the sliding window constant is changed (Mistral export).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataType, loadModel, onnx, saveModel, type AttributeProto } from '../../src/onnx/model-io.ts';
import { analyzeDecoder } from '../../src/split/decoder.ts';
import { findTracedMask } from '../../src/split/mask-repair.ts';

const int64s = (name: string, values: number[], dims = [values.length]) =>
  onnx.TensorProto.create({
    name,
    dataType: DataType.INT64,
    dims,
    rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
  });
const INT = onnx.AttributeProto.AttributeType.INT;
const TENSOR = onnx.AttributeProto.AttributeType.TENSOR;

export interface TracedMaskOptions {
  /** New sliding window: the Mistral export compares query − key with a Constant feeding its only Less node. */
  window?: number;
  /** Fields merged into the copied config.json. */
  config?: Record<string, unknown>;
}

/** Writes `<outDir>/model.onnx` (+ config.json) with the broken mask; returns the model path. */
export async function writeTracedMaskVariant(
  source: string,
  outDir: string,
  options: TracedMaskOptions = {},
): Promise<string> {
  const loaded = await loadModel(source);
  const graph = loaded.model.graph!;
  const nodes = graph.node!;
  const mask = findTracedMask(loaded.model, analyzeDecoder(loaded.model));
  if (!mask) throw new Error(`${source}: no mask tensor to break`);
  if (options.window !== undefined) {
    const less = nodes.filter((n) => n.opType === 'Less');
    const constant = nodes.find((n) => n.opType === 'Constant' && n.output![0] === less[0]?.input![1]);
    if (less.length !== 1 || !constant) throw new Error(`${source}: no window constant`);
    const value = int64s('', [options.window], []);
    constant.attribute = [onnx.AttributeProto.create({ name: 'value', type: TENSOR, t: value })];
  }
  const raw = `${mask.tensor}/before_expand`;
  const producer = nodes[mask.producer];
  producer.output = producer.output!.map((o) => (o === mask.tensor ? raw : o));
  graph.initializer!.push(int64s('bug/one', [1]), int64s('bug/ones', [1, 1]));
  const node = (opType: string, input: string[], output: string, attribute: AttributeProto[] = []) =>
    onnx.NodeProto.create({ name: `bug/${opType}_${output}`, opType, input, output: [output], attribute });
  const zero = onnx.TensorProto.create({ dataType: DataType.FLOAT, dims: [1], rawData: new Uint8Array(4) });
  nodes.splice(
    mask.producer + 1,
    0,
    node('Shape', ['input_ids'], 'bug/ids_shape'),
    node('Gather', ['bug/ids_shape', 'bug/one'], 'bug/seq'),
    node('Shape', ['attention_mask'], 'bug/mask_shape'),
    node('Gather', ['bug/mask_shape', 'bug/one'], 'bug/total'),
    node('Concat', ['bug/seq', 'bug/total'], 'bug/rectangle', [{ name: 'axis', type: INT, i: 0 }]),
    node('ConstantOfShape', ['bug/rectangle'], 'bug/zeros', [{ name: 'value', type: TENSOR, t: zero }]),
    node('Concat', ['bug/ones', 'bug/seq', 'bug/seq'], 'bug/square', [{ name: 'axis', type: INT, i: 0 }]),
    node('Expand', ['bug/zeros', 'bug/square'], 'bug/expanded'), // the bug: total taken for seq
    node('Add', [raw, 'bug/expanded'], mask.tensor),
  );
  mkdirSync(outDir, { recursive: true });
  const path = join(outDir, 'model.onnx');
  await saveModel(loaded.model, path);
  const config = JSON.parse(readFileSync(join(loaded.dir, 'config.json'), 'utf8'));
  writeFileSync(join(outDir, 'config.json'), `${JSON.stringify({ ...config, ...options.config }, null, 2)}\n`);
  return path;
}
