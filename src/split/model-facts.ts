/** Facts about a recognised decoder that both `hat inspect` and the manifest report. */
import { HatError } from '../errors.ts';
import { configAttentionHeads } from '../runtime/model-config.ts';
import { DataType, dataTypeName, toNumber, type ModelProto, type ValueInfoProto } from '../onnx/model-io.ts';
import type { DecoderStructure } from './decoder.ts';
import type { HiddenDType, SplitManifest, TensorSpec } from './manifest.ts';

const ORT_TYPE: Record<number, string> = {
  [DataType.FLOAT]: 'float32',
  [DataType.FLOAT16]: 'float16',
  [DataType.DOUBLE]: 'float64',
  [DataType.BFLOAT16]: 'bfloat16',
  [DataType.INT64]: 'int64',
  [DataType.INT32]: 'int32',
  [DataType.INT8]: 'int8',
  [DataType.UINT8]: 'uint8',
  [DataType.BOOL]: 'bool',
};

export function ortTypeName(dataType: number): string {
  return ORT_TYPE[dataType] ?? dataTypeName(dataType);
}

export function tensorSpec(info: ValueInfoProto): TensorSpec {
  const tensorType = info.type?.tensorType;
  return {
    name: info.name ?? '',
    type: ortTypeName(tensorType?.elemType ?? 0),
    shape: (tensorType?.shape?.dim ?? []).map((d) =>
      d.dimValue !== undefined && d.dimValue !== null && toNumber(d.dimValue) > 0
        ? toNumber(d.dimValue)
        : d.dimParam || '?',
    ),
  };
}

export function hiddenDType(dataType: number): HiddenDType {
  if (dataType === DataType.FLOAT) return 'float32';
  if (dataType === DataType.FLOAT16) return 'float16';
  throw new HatError(
    'UNSUPPORTED_MODEL',
    `hidden states of type ${dataTypeName(dataType)}: hat splits float32 and float16 models`,
    'export the model in float32 or float16',
  );
}

const ATTENTION_OPS = new Set(['MultiHeadAttention', 'GroupQueryAttention', 'Attention', 'PackedAttention']);

/**
 * Heads from the attention op's num_heads, else config.json's num_attention_heads, else hidden size / head size
 * (wrong where heads × head size ≠ hidden size, as in Qwen3: 16 heads of 128 over a hidden size of 1,024).
 */
export function attentionFacts(
  model: ModelProto,
  structure: DecoderStructure,
  modelDir: string,
): SplitManifest['attention'] & { headsFrom: string } {
  const past = model.graph!.input!.find((v) => v.name === structure.layers[0].pastKey)!;
  const shape = tensorSpec(past).shape;
  const kvHeads = typeof shape[1] === 'number' ? shape[1] : undefined;
  const headDim = typeof shape[3] === 'number' ? shape[3] : undefined;
  const attention = structure.index.nodes.find((n) => ATTENTION_OPS.has(n.opType ?? ''));
  const numHeads = attention?.attribute?.find((a) => a.name === 'num_heads');
  const configured = numHeads ? undefined : configAttentionHeads(modelDir);
  const heads = numHeads
    ? toNumber(numHeads.i)
    : (configured ?? (headDim ? structure.hiddenSize / headDim : undefined));
  return {
    heads: heads !== undefined && Number.isInteger(heads) ? heads : undefined,
    kvHeads,
    headDim,
    kvLayout: `[${shape.map((d, i) => (i === 1 ? `kv_heads=${d}` : i === 3 ? `head_dim=${d}` : d)).join(', ')}]`,
    headsFrom: numHeads
      ? `${attention!.opType} num_heads`
      : configured
        ? 'config.json num_attention_heads'
        : 'hidden size / head size',
  };
}
