/**
 * What an attention-mask tensor hides, observed rather than assumed. The nodes computing it are cut out of the
 * graph and run alone (onnxruntime, no weights beyond the prelude's) where traced masks work: prefills on an
 * empty cache, single-token steps on caches of 1 to 8192 positions, and both with a left-padded position. The
 * mask must be additive (0 = visible, ≤ −1e4 = hidden) and hide exactly the future, the padding and — if it has
 * one — the keys a sliding window has left behind (query − key ≥ window). Anything else (a position bias such as
 * ALiBi folded into the tensor, a prefix-LM mask, a bool mask) is reported as such.
 * mask-repair.ts rebuilds a traced mask only when this says what to rebuild, and checks the rebuilt one here too.
 */
import { DataType, onnx, tensorBytes, type LoadedModel, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/model-io.ts';
import { createSession, declaredIntType, intTensor, makeTensor, tensorToFloat32, type Feeds } from '../runtime/session.ts';
import { TOKEN_INPUT } from './decoder.ts';
import { extract } from './extract.ts';

export type MaskObservation =
  | { kind: 'causal'; window?: number; observedUpTo: number }
  | { kind: 'other'; reason: string };

interface MaskCase { past: number; seq: number; padding: number }
interface Row { query: number; hidden: boolean[] }

const PREFILLS = [1, 2, 3, 5, 8];
const STEP_PASTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
  3072, 4096, 6144, 8192];
const PADDED: MaskCase[] = [{ past: 0, seq: 4, padding: 1 }, { past: 4, seq: 1, padding: 1 }];
/** Multi-token steps on a cache: only a rebuilt mask is asked for them (traced ones are why it is rebuilt). */
export const MULTI_TOKEN_CASES: MaskCase[] = [{ past: 2, seq: 4, padding: 0 }, { past: 7, seq: 3, padding: 0 }, { past: 5, seq: 2, padding: 1 }];
const HIDDEN_AT_MOST = -1e4;
const PAST_INPUT = /^(?:past_key_values|past)\.\d+\.(key|value)$/;
const OUT = 'hat/mask_probe/as_float';

/** A model computing only `tensor` (cast to float) from the inputs it reads, every input dim made symbolic. */
function maskModel(source: LoadedModel, nodes: NodeProto[], extra: TensorProto[], tensor: string): Uint8Array {
  const graph = source.model.graph!;
  const initializers = new Map([...(graph.initializer ?? []), ...extra].map((t) => [t.name ?? '', t]));
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? '').filter((name) => !initializers.has(name)));
  const found = extract(nodes, { graphInputs: inputs, initializers: new Set(initializers.keys()) }, new Set(), [tensor]);
  const cast = onnx.NodeProto.create({ name: OUT, opType: 'Cast', input: [tensor], output: [OUT],
    attribute: [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DataType.FLOAT })] });
  const symbolic = (v: ValueInfoProto) => onnx.ValueInfoProto.create({
    name: v.name,
    type: { tensorType: { elemType: v.type?.tensorType?.elemType,
      shape: { dim: (v.type?.tensorType?.shape?.dim ?? []).map((_, i) => ({ dimParam: `${v.name}_${i}` })) } } },
  });
  const inline = (t: TensorProto) => onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: t.dataType, rawData: tensorBytes(source, t) });
  const model = onnx.ModelProto.create({
    irVersion: source.model.irVersion, opsetImport: source.model.opsetImport, functions: source.model.functions,
    graph: {
      name: 'mask probe', node: [...found.nodes, cast],
      input: (graph.input ?? []).filter((v) => found.graphInputs.has(v.name ?? '')).map(symbolic),
      initializer: [...found.initializers].map((name) => inline(initializers.get(name)!)),
      output: [{ name: OUT, type: { tensorType: { elemType: DataType.FLOAT } } }],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** Position j is hidden from query index q (q = past + row) by a causal + padding (+ window) mask. */
function expectedHidden(q: number, j: number, padding: number, window?: number): boolean {
  return j > q || j < padding || (window !== undefined && q - j >= window);
}

/**
 * Observes the additive mask `tensor` computed by `nodes` (source nodes, or a rebuilt mask's nodes with `extra`
 * initializers). `cases` adds steps beyond the default ones (MULTI_TOKEN_CASES for a rebuilt mask).
 */
export async function observeMask(
  source: LoadedModel, nodes: NodeProto[], tensor: string, extra: TensorProto[] = [], cases: MaskCase[] = [],
): Promise<MaskObservation> {
  const session = await createSession(maskModel(source, nodes, extra, tensor), { quietRuntimeLog: true, graphOptimizationLevel: 'disabled' }, 'mask probe');
  const types = new Map(session.inputs.map((i) => [i.name, i]));
  const unknown = session.inputNames.find((name) => ![TOKEN_INPUT, 'attention_mask', 'position_ids'].includes(name) && !PAST_INPUT.test(name));
  if (unknown) {
    await session.release();
    return { kind: 'other', reason: `its construction reads input '${unknown}'` };
  }
  /** Hidden flags of each (head, query) row of one case, or an error message when the prelude fails on it. */
  const run = async ({ past, seq, padding }: MaskCase): Promise<Row[] | string> => {
    const total = past + seq;
    const feeds: Feeds = {};
    for (const name of session.inputNames) {
      const type = declaredIntType(types.get(name));
      if (name === TOKEN_INPUT) feeds[name] = intTensor(type, new Array(seq).fill(0), [1, seq]);
      else if (name === 'attention_mask') feeds[name] = intTensor(type, Array.from({ length: total }, (_, j) => (j < padding ? 0 : 1)), [1, total]);
      else if (name === 'position_ids') feeds[name] = intTensor(type, Array.from({ length: seq }, (_, i) => past + i), [1, seq]);
      else if (types.get(name)?.type === 'float16') feeds[name] = makeTensor('float16', new Uint16Array(past), [1, 1, past, 1]);
      else feeds[name] = makeTensor('float32', new Float32Array(past), [1, 1, past, 1]); // only its length is read
    }
    let output;
    try {
      output = (await session.run(feeds))[OUT];
    } catch (error) {
      return (error as Error).message;
    }
    const dims = output.dims;
    if (dims.length !== 4 || dims[0] !== 1 || dims[2] !== seq || dims[3] !== total) {
      return `it has shape [${dims.join(', ')}] for ${seq} new and ${past} cached positions`;
    }
    const values = tensorToFloat32(output);
    const rows: Row[] = [];
    for (let r = 0; r < dims[1] * seq; r++) {
      const query = past + (r % seq);
      if (query < padding) continue; // a padded query's row is never used
      const row = values.subarray(r * total, (r + 1) * total);
      const odd = row.findIndex((v) => v !== 0 && !(v <= HIDDEN_AT_MOST));
      if (odd >= 0) throw new NotAMask(`it holds ${row[odd]} (neither 0 nor ≤ ${HIDDEN_AT_MOST}): a bias, not only a mask`);
      rows.push({ query, hidden: Array.from(row, (v) => v <= HIDDEN_AT_MOST) });
    }
    return rows;
  };
  try {
    const observed: Array<{ c: MaskCase; rows: Row[] }> = [];
    for (const seq of PREFILLS) {
      const rows = await run({ past: 0, seq, padding: 0 });
      if (typeof rows === 'string') return { kind: 'other', reason: `it cannot be computed for a prefill of ${seq}: ${rows}` };
      observed.push({ c: { past: 0, seq, padding: 0 }, rows });
    }
    let observedUpTo = 0;
    let window: number | undefined;
    for (const past of STEP_PASTS) {
      const rows = await run({ past, seq: 1, padding: 0 });
      if (typeof rows === 'string') break; // the model's own context limit (e.g. a fixed-size mask buffer)
      observedUpTo = past + 1;
      observed.push({ c: { past, seq: 1, padding: 0 }, rows });
      const hidden = rows[0].hidden.filter(Boolean).length; // a window hides the oldest keys of the newest query
      if (window === undefined && hidden > 0) window = past + 1 - hidden;
    }
    for (const c of [...PADDED, ...cases]) {
      const rows = await run(c);
      if (typeof rows === 'string') return { kind: 'other', reason: `it cannot be computed for ${c.seq} new on ${c.past} cached positions: ${rows}` };
      observed.push({ c, rows });
    }
    for (const { c, rows } of observed) {
      for (const { query, hidden } of rows) {
        const j = hidden.findIndex((h, key) => h !== expectedHidden(query, key, c.padding, window));
        if (j >= 0) {
          const what = `key ${j} is ${hidden[j] ? 'hidden from' : 'visible to'} query ${query} (${c.seq} new on ${c.past} cached, ${c.padding} padded)`;
          return { kind: 'other', reason: `it is not a causal + padding${window ? ` + ${window}-position window` : ''} mask: ${what}` };
        }
      }
    }
    return { kind: 'causal', window, observedUpTo };
  } catch (error) {
    if (error instanceof NotAMask) return { kind: 'other', reason: error.message };
    throw error;
  } finally {
    await session.release();
  }
}

class NotAMask extends Error {}
