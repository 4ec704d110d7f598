/**
 * Initial adapter weights taken from one of the model's own decoder layers (its input norm and attention),
 * looked up by the Hugging Face names every hat model uses (src/models/config.ts), [in, out] layout. The
 * integration backs `lookup` with the split parts' initializers.
 */
import { HatError } from '../errors.ts';
import type { AdapterParams } from './attention-adapter.ts';

export function layerAttentionNames(layer: number): Record<keyof AdapterParams, string> {
  const prefix = `model.layers.${layer}`;
  return {
    inputNorm: `${prefix}.input_layernorm.weight`,
    wq: `${prefix}.self_attn.q_proj.weight`,
    wk: `${prefix}.self_attn.k_proj.weight`,
    wv: `${prefix}.self_attn.v_proj.weight`,
    wo: `${prefix}.self_attn.o_proj.weight`,
  };
}

export function layerAttentionInit(lookup: (name: string) => Float32Array | undefined, layer: number): AdapterParams {
  const names = layerAttentionNames(layer);
  const params = {} as AdapterParams;
  for (const [key, name] of Object.entries(names) as Array<[keyof AdapterParams, string]>) {
    const tensor = lookup(name);
    if (!tensor) {
      throw new HatError(
        'UNSUPPORTED_MODEL',
        `cannot initialise the adapter from layer ${layer}: the model has no tensor '${name}'`,
        'train from a random initialisation instead',
      );
    }
    params[key] = tensor;
  }
  return params;
}
