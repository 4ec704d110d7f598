/**
 * A decoder's KV cache as its session describes it: which `past_key_values.N.key/value` inputs pair with which
 * `present.N.key/value` outputs, and the cache's dtype, KV heads and head size — all read from onnxruntime's
 * input metadata, so any Optimum-layout decoder works without parsing its graph.
 *
 * The cache state itself (append each step's presents, truncate to a length for speculative rollback) lives in
 * PartRunner, which every runtime piece — full model, split parts, adapter — already steps through; this module
 * only tells it what to hold.
 */
import { HatError } from '../errors.ts';
import type { KvPair } from '../split/manifest.ts';
import { findKvPairs } from '../split/kv-names.ts';
import type { ModelSession } from './session.ts';

export interface KvLayout {
  pairs: KvPair[];
  dtype: 'float32' | 'float16';
  kvHeads: number;
  headDim: number;
}

export function kvLayoutOf(session: ModelSession): KvLayout {
  const inputs = new Map(session.inputs.map((i) => [i.name, i]));
  // The same pairing `hat split` recognises layers by: past_key_values.N.* in, present.N.* out, N = 0..L-1.
  const pairs = findKvPairs([...session.inputNames], [...session.outputNames]);
  if (pairs.length === 0) {
    throw new HatError(
      'NOT_A_DECODER',
      `${session.label} has no past_key_values.N.key inputs`,
      'export the decoder with its KV cache (Optimum layout, e.g. --task text-generation-with-past)',
    );
  }
  const first = inputs.get(pairs[0].pastKey)!;
  const [, kvHeads, , headDim] = first.shape;
  if (first.shape.length !== 4 || typeof kvHeads !== 'number' || typeof headDim !== 'number') {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `${session.label}: KV input ${first.name} is not [batch, kv_heads, past, head_dim] ` +
        `with fixed heads (${JSON.stringify(first.shape)})`,
    );
  }
  if (first.type !== 'float32' && first.type !== 'float16') {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `${session.label}: KV cache of type ${first.type} is not supported`,
      'use an fp32 or fp16 model',
    );
  }
  return { pairs, dtype: first.type, kvHeads, headDim };
}
