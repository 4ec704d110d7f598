/**
 * The privacy invariant, checked on the written graphs: the middle and output parts take no token ids and
 * compute nothing from token values. The only token-related thing a prelude copy may keep is the zero stand-in
 * shaped like the hidden input (see prelude.ts); value-flow analysis proves it reaches outputs only through
 * Shape/Size reads.
 */
import { TOKEN_INPUT } from './decoder.ts';
import { GraphIndex } from './graph.ts';
import type { PartGraph } from './parts.ts';
import { TOKEN_STAND_IN } from './prelude.ts';

export interface PrivacyResult {
  passed: boolean;
  checks: string[];
}

export function checkPrivacy(parts: PartGraph[]): PrivacyResult {
  const checks: string[] = [];
  let passed = true;
  const record = (ok: boolean, text: string) => {
    passed &&= ok;
    checks.push(`${ok ? 'pass' : 'FAIL'}: ${text}`);
  };
  for (const part of parts) {
    const file = `${part.name}.onnx`;
    const inputs = (part.graph.input ?? []).map((v) => v.name ?? '');
    record(!inputs.includes(TOKEN_INPUT), `${file} has no ${TOKEN_INPUT} input (inputs: ${inputs.join(', ')})`);
    const index = new GraphIndex(part.graph);
    const readsTokens = index.nodes.filter((n) => (n.input ?? []).includes(TOKEN_INPUT)).length;
    record(readsTokens === 0, `${file} has no node reading ${TOKEN_INPUT}`);
    const valueUsers = index.valueReachableFrom([TOKEN_STAND_IN]);
    const leaking = (part.graph.output ?? [])
      .filter((o) => valueUsers.has(index.producer.get(o.name ?? '') ?? -1))
      .map((o) => o.name);
    const shapeOnly = index.consumersOf(TOKEN_STAND_IN).length;
    record(
      leaking.length === 0,
      leaking.length
        ? `${file}: outputs ${leaking.join(', ')} depend on token-shaped values`
        : `${file}: no value path from token ids to any output` +
            `${shapeOnly ? ' (the prelude reads only the sequence shape, taken from the hidden-state input)' : ''}`,
    );
  }
  return { passed, checks };
}
