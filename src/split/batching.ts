/**
 * Whether serve-cloud may run several device sessions' requests as ONE padded run of the middle part, read from the
 * graph when the model is split (and by `hat inspect` on a whole model). A padded batch left-pads each session's
 * past, right-pads its rows, sets attention_mask to 0 on every padded position and feeds each row its own
 * position_ids; ../shared/docs/fleet-serving.md §1 measured that exact on every export family whose attention the
 * mask controls, except GroupQueryAttention. So the rules are:
 * - no batch dimension to pad (a fixed batch size), or no attention_mask input: 'none';
 * - some attention over the cache that attention_mask does not reach: 'none' (padding would be attended to);
 * - rotary positions not computed from position_ids (e.g. from the cache length): 'none' (padding would shift them);
 * - GroupQueryAttention: 'single-row'. It reads each row's length as Σmask − 1, and onnxruntime refuses a batch of
 *   several rows per session over a past; one-row requests batch exactly with pasts padded on the right;
 * - otherwise 'padded'.
 * And whether a batch's presents may be fed back in place as the next pasts (padded-batch.ts), which leaves holes
 * inside a past: yes, unless the model has a sliding window — it hides keys by their index distance from the
 * query, which holes stretch. ('single-row' pasts never have holes: each row's length is read from the mask.)
 * serve-cloud recomputes this for splits written before the manifest had the field (serve.ts).
 */
import { toNumber, type GraphProto } from '../onnx/model-io.ts';
import { GraphIndex } from './graph.ts';
import type { BatchingDecision, BatchingMode, KvPair } from './manifest.ts';

/** Ops that weigh the cache's positions against each other: the mask must reach them. */
const ATTENTION_OPS = new Set(['Softmax', 'Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'SparseAttention']);
/** Ops that turn positions into rotations: they must read position_ids. */
const POSITION_OPS = new Set(['RotaryEmbedding', 'Sin', 'Cos']);

/** `window`: the sliding window config.json declares or the split's mask repair found, if any. */
export function decideBatching(graph: GraphProto, kv: readonly KvPair[], window?: number): BatchingDecision {
  const index = new GraphIndex(graph);
  const none = (reason: string): BatchingDecision => ({ mode: 'none', reason });
  for (const input of graph.input ?? []) {
    const batch = input.type?.tensorType?.shape?.dim?.[0];
    const fixed = batch?.dimValue !== undefined && batch.dimValue !== null ? toNumber(batch.dimValue) : 0;
    if (fixed > 0 && !batch?.dimParam && !index.initializers.has(input.name ?? '')) {
      return none(`input '${input.name}' fixes the batch size to ${fixed}`);
    }
  }
  if (!index.inputs.has('attention_mask')) return none('no attention_mask input: padded positions could not be hidden');
  const label = (node: number) => index.nodes[node].name || index.nodes[node].opType;
  const fromCache = index.valueReachableFrom(kv.map((pair) => pair.pastKey));
  const attention = [...fromCache].filter((node) => ATTENTION_OPS.has(index.nodes[node].opType ?? ''));
  if (attention.length === 0) return none('no attention over the KV cache was found');
  const fromMask = index.valueReachableFrom(['attention_mask']);
  const unmasked = attention.find((node) => !fromMask.has(node));
  if (unmasked !== undefined) {
    return none(`attention ${label(unmasked)} does not read attention_mask: padding would be attended to`);
  }
  const fromPositions = index.valueReachableFrom(index.inputs.has('position_ids') ? ['position_ids'] : []);
  const rotary = index.nodes.flatMap((node, i) => (POSITION_OPS.has(node.opType ?? '') ? [i] : []));
  const unpositioned = rotary.find((node) => !fromPositions.has(node));
  if (unpositioned !== undefined) {
    return none(`${label(unpositioned)} does not read position_ids (positions from shapes): padding would shift them`);
  }
  const positions = rotary.length > 0 ? 'rotary positions from position_ids' : 'no rotary op';
  if (attention.some((node) => index.nodes[node].opType === 'GroupQueryAttention')) {
    return {
      mode: 'single-row',
      reason:
        "GroupQueryAttention takes each row's length from attention_mask and refuses several rows per session " +
        `over a past: one-row requests batch, pasts padded on the right; ${positions}`,
      inPlace: inPlaceFor('single-row', window),
    };
  }
  const gathers =
    window === undefined
      ? ''
      : `; its ${window}-position sliding window counts keys by index, so every batch gathers its pasts (none fed ` +
        'back in place with holes)';
  return {
    mode: 'padded',
    reason: `every attention reads attention_mask; ${positions}${gathers}`,
    inPlace: inPlaceFor('padded', window),
  };
}

/**
 * Whether a split that batches as `mode` may have a batch's presents fed back in place: 'single-row' pasts never
 * have holes; 'padded' ones may, unless a sliding window (`window`) counts keys by index.
 */
export function inPlaceFor(mode: BatchingMode, window: number | undefined): boolean {
  return mode === 'single-row' || (mode === 'padded' && window === undefined);
}

/** What `hat split` and `hat inspect` print after the reason (a sliding window's reason already says it gathers). */
export function inPlaceNote(decision: BatchingDecision): string {
  return decision.inPlace ? '; the same sessions batched again are fed in place' : '';
}
