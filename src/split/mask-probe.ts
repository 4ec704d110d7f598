/**
 * What an attention-mask tensor hides, observed rather than assumed. The nodes computing it are cut out of the
 * graph and run alone (onnxruntime, only the prelude's own constants) where traced masks work: prefills on an
 * empty cache, single-token steps on caches of 1 to 8192 positions, and both with a left-padded position. The
 * mask must be additive (0 = visible, ≤ −1e4 = hidden) and hide exactly the future, the padding and — if it has
 * one — the keys a sliding window has left behind (query − key ≥ window). Anything else (a position bias such as
 * ALiBi folded into the tensor, a prefix-LM mask, a bool mask) is reported as such.
 * mask-repair.ts rebuilds a traced mask only when this says what to rebuild, and checks the rebuilt one here too.
 */
import {
  DataType,
  onnx,
  tensorBytes,
  type LoadedModel,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../onnx/model-io.ts';
import {
  createSession,
  declaredIntType,
  intTensor,
  makeTensor,
  tensorToFloat32,
  type Feeds,
  type ModelSession,
} from '../runtime/session.ts';
import { TOKEN_INPUT } from './decoder.ts';
import { extract } from './extract.ts';

export type MaskObservation =
  { kind: 'causal'; window?: number; observedUpTo: number } | { kind: 'other'; reason: string };

interface MaskCase {
  past: number;
  seq: number;
  padding: number;
}
interface Row {
  query: number;
  hidden: boolean[];
}

const PREFILLS = [1, 2, 3, 5, 8];
const STEP_PASTS = [
  1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
  6144, 8192,
];
const PADDED: MaskCase[] = [
  { past: 0, seq: 4, padding: 1 },
  { past: 4, seq: 1, padding: 1 },
];
/** Multi-token steps on a cache: asked only of a rebuilt mask (traced ones are rebuilt because they fail them). */
export const MULTI_TOKEN_CASES: MaskCase[] = [
  { past: 2, seq: 4, padding: 0 },
  { past: 7, seq: 3, padding: 0 },
  { past: 5, seq: 2, padding: 1 },
];
const HIDDEN_AT_MOST = -1e4;
const PAST_INPUT = /^(?:past_key_values|past)\.\d+\.(key|value)$/;
const OUT = 'hat/mask_probe/as_float';

class NotAMask extends Error {}

/** A model computing only `tensor` (cast to float) from the inputs it reads, every input dim made symbolic. */
function maskModel(source: LoadedModel, nodes: NodeProto[], extra: TensorProto[], tensor: string): Uint8Array {
  const graph = source.model.graph!;
  const initializers = new Map([...(graph.initializer ?? []), ...extra].map((t) => [t.name ?? '', t]));
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? '').filter((name) => !initializers.has(name)));
  const sources = { graphInputs: inputs, initializers: new Set(initializers.keys()) };
  const found = extract(nodes, sources, new Set(), [tensor]);
  const toFloat = { name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DataType.FLOAT };
  const cast = onnx.NodeProto.create({
    name: OUT,
    opType: 'Cast',
    input: [tensor],
    output: [OUT],
    attribute: [toFloat],
  });
  const symbolic = (v: ValueInfoProto) =>
    onnx.ValueInfoProto.create({
      name: v.name,
      type: {
        tensorType: {
          elemType: v.type?.tensorType?.elemType,
          shape: { dim: (v.type?.tensorType?.shape?.dim ?? []).map((_, i) => ({ dimParam: `${v.name}_${i}` })) },
        },
      },
    });
  const inline = (t: TensorProto) =>
    onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: t.dataType, rawData: tensorBytes(source, t) });
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: source.model.irVersion,
      opsetImport: source.model.opsetImport,
      functions: source.model.functions,
      graph: {
        name: 'mask probe',
        node: [...found.nodes, cast],
        input: (graph.input ?? []).filter((v) => found.graphInputs.has(v.name ?? '')).map(symbolic),
        initializer: [...found.initializers].map((name) => inline(initializers.get(name)!)),
        output: [{ name: OUT, type: { tensorType: { elemType: DataType.FLOAT } } }],
      },
    }),
  ).finish();
}

/** Whether key j is hidden from query index q (= past + row) by a causal + padding (+ window) mask. */
function expectedHidden(q: number, j: number, padding: number, window?: number): boolean {
  return j > q || j < padding || (window !== undefined && q - j >= window);
}

/** The hidden flags of each (head, query) row of one case, or onnxruntime's message when the prelude fails. */
async function runCase(session: ModelSession, { past, seq, padding }: MaskCase): Promise<Row[] | string> {
  const total = past + seq;
  const types = new Map(session.inputs.map((i) => [i.name, i]));
  const feeds: Feeds = {};
  for (const name of session.inputNames) {
    const type = declaredIntType(types.get(name));
    if (name === TOKEN_INPUT) feeds[name] = intTensor(type, new Array(seq).fill(0), [1, seq]);
    else if (name === 'attention_mask') {
      feeds[name] = intTensor(
        type,
        Array.from({ length: total }, (_, j) => (j < padding ? 0 : 1)),
        [1, total],
      );
    } else if (name === 'position_ids') {
      feeds[name] = intTensor(
        type,
        Array.from({ length: seq }, (_, i) => past + i),
        [1, seq],
      );
    } else if (types.get(name)?.type === 'float16') {
      feeds[name] = makeTensor('float16', new Uint16Array(past), [1, 1, past, 1]); // a cache: only its length is read
    } else {
      feeds[name] = makeTensor('float32', new Float32Array(past), [1, 1, past, 1]);
    }
  }
  let output;
  try {
    output = (await session.run(feeds))[OUT];
  } catch (error) {
    return (error as Error).message;
  }
  const dims = output.dims;
  if (dims.length !== 4 || dims[0] !== 1 || dims[2] !== seq || dims[3] !== total) {
    throw new NotAMask(`it has shape [${dims.join(', ')}] for ${seq} new and ${past} cached positions`);
  }
  const values = tensorToFloat32(output);
  const rows: Row[] = [];
  for (let r = 0; r < dims[1] * seq; r++) {
    const query = past + (r % seq);
    if (query < padding) continue; // a padded query's row is never used
    const row = values.subarray(r * total, (r + 1) * total);
    const odd = row.findIndex((v) => v !== 0 && !(v <= HIDDEN_AT_MOST));
    if (odd >= 0) {
      throw new NotAMask(`it holds ${row[odd]} (neither 0 nor ≤ ${HIDDEN_AT_MOST}): a bias, not only a mask`);
    }
    rows.push({ query, hidden: Array.from(row, (v) => v <= HIDDEN_AT_MOST) });
  }
  return rows;
}

/** Runs the cases, reads the window off the single-token steps (it hides the query's oldest keys), checks all. */
async function observeCases(session: ModelSession, extra: MaskCase[]): Promise<MaskObservation> {
  const observed: Array<{ c: MaskCase; rows: Row[] }> = [];
  const required = async (c: MaskCase) => {
    const rows = await runCase(session, c);
    if (typeof rows === 'string') {
      throw new NotAMask(`it fails for ${c.seq} new on ${c.past} cached positions: ${rows}`);
    }
    observed.push({ c, rows });
  };
  for (const seq of PREFILLS) await required({ past: 0, seq, padding: 0 });
  let observedUpTo = 0;
  let window: number | undefined;
  for (const past of STEP_PASTS) {
    const rows = await runCase(session, { past, seq: 1, padding: 0 });
    if (typeof rows === 'string') break; // the model's own context limit (e.g. a fixed-size mask buffer)
    observedUpTo = past + 1;
    observed.push({ c: { past, seq: 1, padding: 0 }, rows });
    const hidden = rows[0].hidden.filter(Boolean).length;
    if (window === undefined && hidden > 0) window = past + 1 - hidden;
  }
  if (observedUpTo === 0) throw new NotAMask('it fails on single-token steps');
  for (const c of [...PADDED, ...extra]) await required(c);
  for (const { c, rows } of observed) {
    for (const { query, hidden } of rows) {
      const j = hidden.findIndex((h, key) => h !== expectedHidden(query, key, c.padding, window));
      if (j < 0) continue;
      const kind = `causal + padding${window ? ` + ${window}-position window` : ''}`;
      const where = `${c.seq} new on ${c.past} cached, ${c.padding} padded`;
      const seen = hidden[j] ? 'hidden from' : 'visible to';
      return { kind: 'other', reason: `not a ${kind} mask: key ${j} is ${seen} query ${query} (${where})` };
    }
  }
  return { kind: 'causal', window, observedUpTo };
}

/**
 * Observes the additive mask `tensor` computed by `nodes` (the source's, or a rebuilt mask's with `extra`
 * initializers); `cases` are asked on top of the default ones (MULTI_TOKEN_CASES for a rebuilt mask).
 */
export async function observeMask(
  source: LoadedModel,
  nodes: NodeProto[],
  tensor: string,
  extra: TensorProto[] = [],
  cases: MaskCase[] = [],
): Promise<MaskObservation> {
  let session: ModelSession;
  try {
    session = await createSession(
      maskModel(source, nodes, extra, tensor),
      { quietRuntimeLog: true, graphOptimizationLevel: 'disabled' },
      'mask probe',
    );
  } catch (error) {
    return { kind: 'other', reason: `its construction cannot run alone (${(error as Error).message.split('\n')[0]})` };
  }
  try {
    const known = (name: string) =>
      [TOKEN_INPUT, 'attention_mask', 'position_ids'].includes(name) || PAST_INPUT.test(name);
    const unknown = session.inputNames.find((name) => !known(name));
    if (unknown) return { kind: 'other', reason: `its construction reads input '${unknown}'` };
    return await observeCases(session, cases);
  } catch (error) {
    if (error instanceof NotAMask) return { kind: 'other', reason: error.message };
    throw error;
  } finally {
    await session.release();
  }
}
