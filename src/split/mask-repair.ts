/**
 * Repair of traced attention-mask preludes. Exports traced on an empty cache bake trace-time shapes into the
 * mask construction, so a multi-token step over a non-empty cache fails ("invalid expand shape"). HAT's chunked
 * prefill and draft verification need exactly that step. The repair replaces the prelude's final mask tensor
 * (the additive [batch, 1, seq, total] bias every layer reads) with a correct construction from attention_mask
 * alone: position j is hidden from query i when j > past + i, attention_mask[j] = 0 or, for a sliding-window
 * model, past + i − j ≥ window. The traced mask is first run alone where it works (mask-probe.ts): the repair is
 * made only if it is such a mask, with the window it shows, and the rebuilt mask is checked the same way.
 * `hat split` applies it only when the model fails the multi-token probe, and keeps it only if the repaired
 * parts then match the full model run token by token.
 */
import {
  DataType,
  int64Tensor,
  onnx,
  toNumber,
  type LoadedModel,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from '../onnx/model-io.ts';
import { configSlidingWindow } from '../runtime/model-config.ts';
import { TOKEN_INPUT, type DecoderStructure } from './decoder.ts';
import { MULTI_TOKEN_CASES, observeMask } from './mask-probe.ts';

export interface MaskRepair {
  /** The traced mask tensor; the repair produces a tensor of the same name. */
  tensor: string;
  /** Source node index of its producer, which the repair replaces. */
  producer: number;
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** Sliding window (keys at query − key ≥ window are hidden), when the traced mask has one. */
  window?: number;
}

const LOWEST = { [DataType.FLOAT]: -3.4028234663852886e38, [DataType.FLOAT16]: -65504 } as Record<number, number>;

function scalar(name: string, dataType: number, value: number): TensorProto {
  const bytes = new Uint8Array(dataType === DataType.INT64 ? 8 : dataType === DataType.FLOAT ? 4 : 2);
  const view = new DataView(bytes.buffer);
  if (dataType === DataType.INT64) view.setBigInt64(0, BigInt(value), true);
  else if (dataType === DataType.FLOAT) view.setFloat32(0, value, true);
  else view.setUint16(0, value === 0 ? 0 : 0xfbff, true); // fp16: 0 or -65504, the only values used here
  return onnx.TensorProto.create({ name, dataType, dims: [], rawData: bytes });
}

/**
 * The mask tensor: computed outside the token path from attention_mask's values and read directly by the
 * layers. Exactly one such tensor must exist, else no repair is attempted.
 */
export function findTracedMask(
  model: ModelProto,
  structure: DecoderStructure,
): { tensor: string; producer: number } | undefined {
  const { index } = structure;
  const opset = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  if (!opset || toNumber(opset.version) < 13 || !index.inputs.has('attention_mask')) return undefined;
  const tokenPath = index.valueReachableFrom([TOKEN_INPUT]);
  const fromMask = index.valueReachableFrom(['attention_mask']);
  const candidates = new Set<string>();
  for (const node of fromMask) {
    if (tokenPath.has(node)) continue;
    for (const output of index.nodes[node].output ?? []) {
      if (output && index.consumersOf(output).some((c) => tokenPath.has(c))) candidates.add(output);
    }
  }
  if (candidates.size !== 1) return undefined;
  const [tensor] = candidates;
  return { tensor, producer: index.producer.get(tensor)! };
}

export function causalMaskRepair(
  model: ModelProto,
  structure: DecoderStructure,
  window?: number,
): MaskRepair | undefined {
  const found = findTracedMask(model, structure);
  const dataType = structure.boundaries[0].dataType;
  if (!found || LOWEST[dataType] === undefined) return undefined;
  const p = 'hat/mask';
  const initializers = [
    scalar(`${p}/zero_i`, DataType.INT64, 0),
    scalar(`${p}/one_i`, DataType.INT64, 1),
    scalar(`${p}/lowest`, dataType, LOWEST[dataType]),
    scalar(`${p}/zero`, dataType, 0),
    int64Tensor(`${p}/axis0`, [0]),
    int64Tensor(`${p}/axis1`, [1]),
    int64Tensor(`${p}/axes12`, [1, 2]),
    ...(window ? [scalar(`${p}/window`, DataType.INT64, window)] : []),
  ];
  const node = (name: string, opType: string, input: string[], attribute: object[] = []) =>
    onnx.NodeProto.create({
      name: `${p}/${name}`,
      opType,
      input,
      output: [name === 'Where' ? found.tensor : `${p}/${name}`],
      attribute,
    });
  const out = (name: string) => `${p}/${name}`;
  const int64 = [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DataType.INT64 }];
  const nodes = [
    node('mask_i64', 'Cast', ['attention_mask'], int64),
    node('total_shape', 'Shape', [out('mask_i64')]),
    node('total', 'Gather', [out('total_shape'), `${p}/one_i`]),
    node('ids_shape', 'Shape', [TOKEN_INPUT]),
    node('seq', 'Gather', [out('ids_shape'), `${p}/one_i`]),
    node('past', 'Sub', [out('total'), out('seq')]),
    node('query_pos', 'Range', [out('past'), out('total'), `${p}/one_i`]),
    node('key_pos', 'Range', [`${p}/zero_i`, out('total'), `${p}/one_i`]),
    node('query_col', 'Unsqueeze', [out('query_pos'), `${p}/axis1`]),
    node('key_row', 'Unsqueeze', [out('key_pos'), `${p}/axis0`]),
    node('causal', 'Greater', [out('key_row'), out('query_col')]),
    ...(window
      ? [
          node('distance', 'Sub', [out('query_col'), out('key_row')]),
          node('left_behind', 'GreaterOrEqual', [out('distance'), `${p}/window`]),
          node('future', 'Or', [out('causal'), out('left_behind')]),
        ]
      : [node('future', 'Identity', [out('causal')])]),
    node('padding', 'Equal', [out('mask_i64'), `${p}/zero_i`]),
    node('padding_4d', 'Unsqueeze', [out('padding'), `${p}/axes12`]),
    node('hidden', 'Or', [out('future'), out('padding_4d')]),
    node('Where', 'Where', [out('hidden'), `${p}/lowest`, `${p}/zero`]),
  ];
  return { ...found, nodes, initializers, window };
}

/**
 * The repair, if the traced mask is one hat can rebuild exactly: a causal + padding mask, with or without a
 * sliding window, as observed by running it alone. Otherwise `reason` says why the model's own mask stays.
 */
export async function checkedMaskRepair(
  source: LoadedModel,
  structure: DecoderStructure,
): Promise<{ repair?: MaskRepair; reason?: string }> {
  const found = findTracedMask(source.model, structure);
  if (!found) return { reason: 'no single mask tensor computed from attention_mask feeds the layers' };
  const nodes = structure.index.order.map((i) => structure.index.nodes[i]);
  const traced = await observeMask(source, nodes, found.tensor);
  if (traced.kind === 'other') return { reason: `the mask ${found.tensor} cannot be rebuilt: ${traced.reason}` };
  const declared = configSlidingWindow(source.dir);
  if (traced.window === undefined && declared !== undefined && declared >= traced.observedUpTo) {
    const checked = traced.observedUpTo;
    return {
      reason:
        `config.json declares a sliding window of ${declared} positions, longer than the ${checked} ` +
        'the mask was checked over',
    };
  }
  const repair = causalMaskRepair(source.model, structure, traced.window);
  if (!repair) return { reason: `the mask ${found.tensor} is not in the model's float type` };
  const rebuilt = await observeMask(source, repair.nodes, found.tensor, repair.initializers, MULTI_TOKEN_CASES);
  if (rebuilt.kind !== 'causal' || rebuilt.window !== traced.window) {
    const how = rebuilt.kind === 'other' ? rebuilt.reason : `window ${rebuilt.window}`;
    return { reason: `the rebuilt mask does not match ${found.tensor} (${how})` };
  }
  return { repair };
}
