/**
 * Reads the output part (final RMSNorm + LM head, J = 0) as the OutputHead the training loss needs, without
 * parsing its graph: exports differ (fused SimplifiedLayerNormalization, Pow/ReduceMean chains, Gemm or MatMul,
 * tied or transposed weights), but they all compute logits = W · (γ ⊙ h / √(mean h² + ε)). Feeding scaled
 * one-hot states e_i·s through onnxruntime returns column i of W·diag(γ), which is all the loss needs (γ is
 * folded into W and the head's norm weight becomes ones). ε comes from config.json when given, else from two
 * probes at different scales. A random-input check then proves the head equals the part; anything else (a
 * LayerNorm with bias, a logit bias, decoder layers in the output part) is refused with a clear error.
 */
import { HatError } from '../errors.ts';
import type { PartRunner } from '../runtime/part-runner.ts';
import type { OutputHead } from './output-head.ts';
import { rmsNorm } from './rmsnorm.ts';
import { seededRandom } from '../random.ts';

const SCALE = 4;
/** Probe rows per onnxruntime run: bounds the [rows, vocab] logits held at once. */
const ROWS_PER_RUN = 256;

async function logitsOf(part: PartRunner, rows: Float32Array, count: number): Promise<Float32Array> {
  part.truncate(0);
  const out = await part.step({ hidden: rows }, count);
  part.truncate(0);
  return out.data;
}

/** ε from two probes of one coordinate: (s/f)² = s²/(d·c²) + ε/c² is linear in s². */
async function probeEps(part: PartRunner, hidden: number): Promise<number> {
  const probe = async (s: number) => {
    const row = new Float32Array(hidden);
    row[0] = s;
    const logits = await logitsOf(part, row, 1);
    let k = 0;
    for (let v = 1; v < logits.length; v++) if (Math.abs(logits[v]) > Math.abs(logits[k])) k = v;
    return { s, f: logits[k], k };
  };
  const big = await probe(SCALE);
  const small = await probe(1e-4);
  const yBig = (big.s / big.f) ** 2,
    ySmall = (small.s / small.f) ** 2;
  const slope = (yBig - ySmall) / (big.s ** 2 - small.s ** 2);
  const eps = ySmall - slope * small.s ** 2;
  return Math.max(0, eps / slope / hidden);
}

export async function probeOutputHead(
  part: PartRunner,
  hidden: number,
  options: { eps?: number; vocab: number },
): Promise<OutputHead> {
  if (part.io.kv.length > 0) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      'the output part holds decoder layers (J > 0); the adapter is trained against a norm + LM head output part',
      'split again with --output-layers 0',
    );
  }
  const eps = options.eps ?? (await probeEps(part, hidden));
  const vocab = options.vocab;
  const lmHead = new Float32Array(hidden * vocab);
  const rms = Math.sqrt((SCALE * SCALE) / hidden + eps);
  for (let start = 0; start < hidden; start += ROWS_PER_RUN) {
    const count = Math.min(ROWS_PER_RUN, hidden - start);
    const rows = new Float32Array(count * hidden);
    for (let r = 0; r < count; r++) rows[r * hidden + start + r] = SCALE;
    const logits = await logitsOf(part, rows, count);
    // Row i of the [hidden, vocab] head: logits of e_i·s divided by its normalised value s / rms.
    for (let r = 0; r < count; r++) {
      const scale = rms / SCALE;
      const row = lmHead.subarray((start + r) * vocab, (start + r + 1) * vocab);
      for (let v = 0; v < vocab; v++) row[v] = logits[r * vocab + v] * scale;
    }
  }
  const head: OutputHead = { normWeight: new Float32Array(hidden).fill(1), eps, lmHead, vocab };
  await checkHeadAgainstPart(part, head, hidden);
  return head;
}

/** Random states through both: the probed head must reproduce the part's logits. */
async function checkHeadAgainstPart(part: PartRunner, head: OutputHead, hidden: number): Promise<void> {
  const count = 4;
  const random = seededRandom(12345);
  const rows = Float32Array.from({ length: count * hidden }, () => (random.uniform() * 2 - 1) * 3);
  const expected = await logitsOf(part, rows, count);
  const normed = rmsNorm(rows, head.normWeight, head.eps).out;
  let worst = 0,
    scale = 0;
  for (let r = 0; r < count; r++) {
    for (let v = 0; v < head.vocab; v++) {
      let sum = 0;
      for (let i = 0; i < hidden; i++) sum += normed[r * hidden + i] * head.lmHead[i * head.vocab + v];
      worst = Math.max(worst, Math.abs(sum - expected[r * head.vocab + v]));
      scale = Math.max(scale, Math.abs(expected[r * head.vocab + v]));
    }
  }
  if (worst > 1e-3 * Math.max(1, scale)) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `the output part is not an RMSNorm + linear LM head (probed head differs by ${worst.toExponential(2)})`,
      'train a linear adapter (--kind linear), which needs no head',
    );
  }
}
