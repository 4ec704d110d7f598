/**
 * Initial adapter weights read from ONNX files: a decoder layer's attention weights in a split part, to initialise
 * the adapter from the model's own last middle layer (Kangaroo/HAT: the adapter stands in for the layers it skips),
 * or a trained adapter.onnx, to continue its training (`--init adapter`). Exports name them differently:
 * hat's builder keeps Hugging Face names in [in, out] layout; PyTorch exports feed MatMul nodes named
 * `…/layers.N/self_attn/q_proj/MatMul` with anonymous [in, out] initializers. Both are recognised; anything else
 * returns undefined and the adapter starts from a random initialisation.
 */
import { loadModel, tensorBytes, tensorDims, type LoadedModel } from '../onnx/model-io.ts';
import type { AdapterParams } from './attention-adapter.ts';
import { ADAPTER_WEIGHT_NAMES } from './export-onnx.ts';
import { layerAttentionNames } from './init-from-model.ts';

function floats(loaded: LoadedModel, name: string): { data: Float32Array; dims: number[] } | undefined {
  const tensor = loaded.model.graph!.initializer!.find((t) => t.name === name);
  if (!tensor || tensor.dataType !== 1) return undefined;
  const bytes = tensorBytes(loaded, tensor);
  return {
    data: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice(),
    dims: tensorDims(tensor),
  };
}

/** The [in, out] weight of the projection MatMul whose node name mentions layer `layer` and `proj`. */
function projection(loaded: LoadedModel, layer: number, proj: string): Float32Array | undefined {
  const marker = new RegExp(`layers[./]${layer}[./].*${proj}`);
  for (const node of loaded.model.graph!.node!) {
    if (node.opType !== 'MatMul' || !marker.test(`${node.name ?? ''} ${(node.output ?? []).join(' ')}`)) continue;
    const weight = floats(loaded, node.input?.[1] ?? '');
    if (weight?.dims.length === 2) return weight.data;
  }
  return undefined;
}

export async function layerAttentionWeights(partPath: string, layer: number): Promise<AdapterParams | undefined> {
  const loaded = await loadModel(partPath);
  const names = layerAttentionNames(layer);
  const byName = (key: keyof AdapterParams) => floats(loaded, names[key])?.data;
  const params: Partial<AdapterParams> = {
    inputNorm: byName('inputNorm'),
    wq: byName('wq') ?? projection(loaded, layer, 'q_proj'),
    wk: byName('wk') ?? projection(loaded, layer, 'k_proj'),
    wv: byName('wv') ?? projection(loaded, layer, 'v_proj'),
    wo: byName('wo') ?? projection(loaded, layer, 'o_proj'),
  };
  return Object.values(params).every((v) => v !== undefined) ? (params as AdapterParams) : undefined;
}

/** A trained attention adapter's weights, as `hat train-adapter` exported them; undefined if any is missing. */
export async function savedAdapterWeights(adapterPath: string): Promise<AdapterParams | undefined> {
  const loaded = await loadModel(adapterPath);
  const entries = Object.entries(ADAPTER_WEIGHT_NAMES).map(([key, name]) => [key, floats(loaded, name)?.data]);
  return entries.every(([, data]) => data !== undefined) ? (Object.fromEntries(entries) as AdapterParams) : undefined;
}
