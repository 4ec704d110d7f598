/**
 * A toy split directory for server tests: middle.onnx keeps every hidden state it sees in a one-layer KV cache
 * and returns h_i + Σ_cache h_j, so results reveal exactly which positions the cloud's cache holds.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeModel, onnx } from '../../src/onnx/model-io.ts';
import { MANIFEST_FORMAT, type SplitManifest } from '../../src/split/manifest.ts';
import { tempDirRemovedAtExit } from './temp-dir.ts';

export const TOY_HIDDEN = 4;

function valueInfo(name: string, elemType: number, dims: Array<number | string>) {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function int64Initializer(name: string, values: number[]) {
  return { name, dataType: onnx.TensorProto.DataType.INT64, dims: [values.length], int64Data: values };
}

export function toyMiddleModel(): Uint8Array {
  const F = onnx.TensorProto.DataType.FLOAT;
  const I = onnx.TensorProto.DataType.INT64;
  const graph = {
    name: 'toy-middle',
    input: [
      valueInfo('h_in', F, [1, 's', TOY_HIDDEN]),
      valueInfo('attention_mask', I, [1, 't']),
      valueInfo('position_ids', I, [1, 's']),
      valueInfo('past_key_values.1.key', F, [1, 1, 'p', TOY_HIDDEN]),
      valueInfo('past_key_values.1.value', F, [1, 1, 'p', TOY_HIDDEN]),
    ],
    output: [
      valueInfo('h_out', F, [1, 's', TOY_HIDDEN]),
      valueInfo('present.1.key', F, [1, 1, 't', TOY_HIDDEN]),
      valueInfo('present.1.value', F, [1, 1, 't', TOY_HIDDEN]),
    ],
    initializer: [int64Initializer('axis1', [1]), int64Initializer('axis2', [2])],
    node: [
      { opType: 'Unsqueeze', input: ['h_in', 'axis1'], output: ['h_u'] },
      {
        opType: 'Concat',
        input: ['past_key_values.1.key', 'h_u'],
        output: ['present.1.key'],
        attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 2 }],
      },
      {
        opType: 'Concat',
        input: ['past_key_values.1.value', 'h_u'],
        output: ['present.1.value'],
        attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 2 }],
      },
      {
        opType: 'ReduceSum',
        input: ['present.1.key', 'axis2'],
        output: ['sum4'],
        attribute: [{ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 1 }],
      },
      { opType: 'Squeeze', input: ['sum4', 'axis1'], output: ['sum3'] },
      { opType: 'Add', input: ['h_in', 'sum3'], output: ['h_out'] },
    ],
  };
  return encodeModel({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph });
}

/** What the toy middle returns for `rows` given everything the cache held before them. */
export function toyExpected(cache: number[][], rows: number[][]): number[][] {
  const all = [...cache, ...rows];
  const sum = Array.from({ length: TOY_HIDDEN }, (_, c) => all.reduce((s, r) => s + r[c], 0));
  return rows.map((r) => r.map((v, c) => v + sum[c]));
}

export function makeToySplitDir(): string {
  const dir = tempDirRemovedAtExit('hat-toy-split-'); // for the whole test file: removed when its process exits
  writeFileSync(join(dir, 'middle.onnx'), toyMiddleModel());
  const pair = {
    layer: 1,
    pastKey: 'past_key_values.1.key',
    pastValue: 'past_key_values.1.value',
    presentKey: 'present.1.key',
    presentValue: 'present.1.value',
  };
  const part = (file: string, layers: [number, number]) => ({ file, dataFiles: [], layers, inputs: [], outputs: [] });
  const manifest: SplitManifest = {
    format: MANIFEST_FORMAT,
    source: { file: 'toy.onnx', sha256: '0'.repeat(64), layers: 3 },
    hidden: { size: TOY_HIDDEN, dtype: 'float32' },
    attention: { kvLayout: 'BHSD' },
    boundaries: { inputToMiddle: 'h_in', middleToOutput: 'h_out' },
    parts: {
      input: part('input.onnx', [0, 1]),
      middle: part('middle.onnx', [1, 2]),
      output: part('output.onnx', [3, 3]),
    },
    kv: { input: [], middle: [pair], output: [] },
    prelude: {},
    privacy: { passed: true, checks: [] },
    multiTokenCachedSteps: true,
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return dir;
}
