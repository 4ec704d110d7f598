/**
 * The KV-cache naming every hat decoder follows (Optimum layout): `past_key_values.N.key/value` (or `past.N.*`)
 * inputs pair with `present.N.key/value` outputs. Layer recognition in `hat split` and the runtime's KV discovery
 * both pair them here; it imports only errors.ts and the manifest's KvPair type, so the device runtime loads
 * nothing of the splitter.
 */
import { HatError } from '../errors.ts';
import type { KvPair } from './manifest.ts';

const PAST = /^(?:past_key_values|past)\.(\d+)\.(key|value)$/;
export const PRESENT = /^present\.(\d+)\.(key|value)$/;

/**
 * A decoder's logits output: the one named `logits`, else its only output that is not a present.* (some exports
 * name it otherwise, e.g. `lm_logits`). A split's output part always names it `logits`.
 */
export function logitsOutputOf(outputs: readonly string[]): string | undefined {
  if (outputs.includes('logits')) return 'logits';
  const others = outputs.filter((name) => !PRESENT.test(name));
  return others.length === 1 ? others[0] : undefined;
}

export function findKvPairs(inputs: string[], outputs: string[]): KvPair[] {
  const pairs = new Map<number, Partial<KvPair>>();
  const slot = (layer: number) => pairs.get(layer) ?? pairs.set(layer, { layer }).get(layer)!;
  for (const name of inputs) {
    const m = PAST.exec(name);
    if (m) slot(Number(m[1]))[m[2] === 'key' ? 'pastKey' : 'pastValue'] = name;
  }
  for (const name of outputs) {
    const m = PRESENT.exec(name);
    if (m) slot(Number(m[1]))[m[2] === 'key' ? 'presentKey' : 'presentValue'] = name;
  }
  const layers = [...pairs.keys()].sort((a, b) => a - b);
  return layers.map((layer, i) => {
    const pair = pairs.get(layer)!;
    if (layer !== i || !pair.pastKey || !pair.pastValue || !pair.presentKey || !pair.presentValue) {
      throw new HatError(
        'NOT_A_DECODER',
        `KV cache tensors for layer ${layer} are incomplete or not numbered 0..N-1`,
        'expected past_key_values.N.key/value inputs and present.N.key/value outputs for every layer N',
      );
    }
    return pair as KvPair;
  });
}
