/**
 * The attention adapter (Kangaroo / HAT): y = x + Attention(RMSNorm(x)) with RoPE and a causal mask, no MLP.
 * Forward and hand-written backward over a batch of equal-length sequences; the big products run on a
 * MatMulEngine, the O(tokens·width) glue in JS.
 *
 * Weights are stored [in, out] (x·W, the layout of an ONNX MatMul initializer). Grouped-query attention is
 * supported so the adapter can start from a GQA model's own attention weights: kv head g serves query heads
 * g·rep … g·rep+rep−1 (Hugging Face's repeat_kv), which makes [batch, heads, seq, headDim] the same memory as
 * [batch·kvHeads, rep·seq, headDim] — one batched product per kv head, no copies of K and V.
 */
import { HatError } from '../errors.ts';
import type { MatMulEngine } from './matmul.ts';
import { normalArray, seededRandom } from '../random.ts';
import { rmsNorm, rmsNormBackward } from './rmsnorm.ts';
import { applyRope, fromHeads, ropeTables, toHeads, type RopeTables } from './rope.ts';

export interface AttentionAdapterConfig {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ropeTheta: number;
  normEps: number;
}

export const PARAM_NAMES = ['inputNorm', 'wq', 'wk', 'wv', 'wo'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];
export type AdapterParams = Record<ParamName, Float32Array>;

export function paramShapes(config: AttentionAdapterConfig): Record<ParamName, number[]> {
  const { hidden, heads, kvHeads, headDim } = config;
  return {
    inputNorm: [hidden],
    wq: [hidden, heads * headDim],
    wk: [hidden, kvHeads * headDim],
    wv: [hidden, kvHeads * headDim],
    wo: [heads * headDim, hidden],
  };
}

export function parameterCount(config: AttentionAdapterConfig): number {
  return Object.values(paramShapes(config)).reduce((sum, dims) => sum + dims.reduce((a, b) => a * b, 1), 0);
}

export function validateConfig(config: AttentionAdapterConfig): void {
  const { hidden, heads, kvHeads, headDim } = config;
  const positive = [hidden, heads, kvHeads, headDim].every((v) => Number.isInteger(v) && v > 0);
  if (!positive || heads % kvHeads !== 0 || headDim % 2 !== 0) {
    throw new HatError(
      'BAD_OPTION',
      `invalid adapter shape: hidden ${hidden}, heads ${heads}, kv heads ${kvHeads}, head size ${headDim}`,
      'heads must be a multiple of kv heads and the head size even',
    );
  }
}

export interface InitOptions {
  seed?: number;
  /**
   * Start from existing weights (e.g. the model's last middle layer's attention and its input norm), each
   * [in, out]; tensors not given are initialised randomly.
   */
  from?: Partial<AdapterParams>;
  /** Std of Wo relative to 1/√width: small, so the fresh adapter starts near the identity (y ≈ x). */
  outputScale?: number;
}

export function initAdapterParams(config: AttentionAdapterConfig, options: InitOptions = {}): AdapterParams {
  validateConfig(config);
  const random = seededRandom(options.seed ?? 0);
  const shapes = paramShapes(config);
  const fresh: AdapterParams = {
    inputNorm: new Float32Array(config.hidden).fill(1),
    wq: normalArray(random, config.hidden * config.heads * config.headDim, 1 / Math.sqrt(config.hidden)),
    wk: normalArray(random, config.hidden * config.kvHeads * config.headDim, 1 / Math.sqrt(config.hidden)),
    wv: normalArray(random, config.hidden * config.kvHeads * config.headDim, 1 / Math.sqrt(config.hidden)),
    wo: normalArray(
      random,
      config.heads * config.headDim * config.hidden,
      (options.outputScale ?? 0.01) / Math.sqrt(config.heads * config.headDim),
    ),
  };
  for (const name of PARAM_NAMES) {
    const given = options.from?.[name];
    if (!given) continue;
    const expected = shapes[name].reduce((a, b) => a * b, 1);
    if (given.length !== expected) {
      throw new HatError(
        'BAD_OPTION',
        `initial ${name} has ${given.length} values, the adapter needs ${expected} (${shapes[name].join('×')})`,
        "initial weights must be [in, out] with the adapter's heads and head size",
      );
    }
    fresh[name] = Float32Array.from(given);
  }
  return fresh;
}

export function zerosLike(params: AdapterParams): AdapterParams {
  return Object.fromEntries(PARAM_NAMES.map((name) => [name, new Float32Array(params[name].length)])) as AdapterParams;
}

/** A batch of `batch` sequences of `seq` tokens each, rows in (sequence, position) order. */
export interface SequenceBatch {
  batch: number;
  seq: number;
  /** [batch·seq, hidden]. */
  hidden: Float32Array;
  /** [batch·seq] absolute positions (RoPE). */
  positions: ArrayLike<number>;
}

/** What the backward pass needs from the forward pass. */
export interface AdapterActivations {
  input: SequenceBatch;
  normed: Float32Array;
  inverseRms: Float32Array;
  rope: RopeTables;
  /** [batch, heads, seq, headDim] after RoPE, and [batch, kvHeads, seq, headDim]. */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** Softmax weights [batch·kvHeads, rep·seq, seq]. */
  probabilities: Float32Array;
  /** Attention output before Wo, [batch·seq, heads·headDim]. */
  attended: Float32Array;
  /** The adapter's output y, [batch·seq, hidden]. */
  output: Float32Array;
}

function checkBatch(config: AttentionAdapterConfig, input: SequenceBatch): void {
  const tokens = input.batch * input.seq;
  if (input.hidden.length !== tokens * config.hidden || input.positions.length !== tokens) {
    throw new HatError(
      'INTERNAL',
      `batch of ${input.batch}×${input.seq} tokens has ${input.hidden.length} hidden values ` +
        `and ${input.positions.length} positions (width ${config.hidden})`,
    );
  }
}

export async function adapterForward(
  params: AdapterParams,
  config: AttentionAdapterConfig,
  input: SequenceBatch,
  engine: MatMulEngine,
): Promise<AdapterActivations> {
  checkBatch(config, input);
  const { hidden, heads, kvHeads, headDim } = config;
  const { batch, seq } = input;
  const tokens = batch * seq;
  const rep = heads / kvHeads;
  const { out: normed, inverseRms } = rmsNorm(input.hidden, params.inputNorm, config.normEps);
  const project = (weight: Float32Array, width: number) =>
    engine.matmul(normed, weight, { m: tokens, k: hidden, n: width });
  const [qFlat, kFlat, vFlat] = await Promise.all([
    project(params.wq, heads * headDim),
    project(params.wk, kvHeads * headDim),
    project(params.wv, kvHeads * headDim),
  ]);
  const rope = ropeTables(input.positions, headDim, config.ropeTheta);
  applyRope(qFlat, heads, rope);
  applyRope(kFlat, kvHeads, rope);
  const q = toHeads(qFlat, batch, seq, heads, headDim);
  const k = toHeads(kFlat, batch, seq, kvHeads, headDim);
  const v = toHeads(vFlat, batch, seq, kvHeads, headDim);

  const groups = batch * kvHeads;
  const scores = await engine.matmul(q, k, { batch: groups, m: rep * seq, k: headDim, n: seq, transB: true });
  causalSoftmax(scores, groups * rep, seq, 1 / Math.sqrt(headDim));
  const probabilities = scores;
  const attendedHeads = await engine.matmul(probabilities, v, { batch: groups, m: rep * seq, k: seq, n: headDim });
  const attended = fromHeads(attendedHeads, batch, seq, heads, headDim);
  const output = await engine.matmul(attended, params.wo, { m: tokens, k: heads * headDim, n: hidden });
  for (let i = 0; i < output.length; i++) output[i] += input.hidden[i];
  return { input, normed, inverseRms, rope, q, k, v, probabilities, attended, output };
}

/**
 * In place: scores [blocks·seq, seq] → softmax(scale·scores) over keys 0..query, zero above the diagonal.
 * Each block is one (sequence, head) pair; row r of a block is query position r.
 */
function causalSoftmax(scores: Float32Array, blocks: number, seq: number, scale: number): void {
  for (let row = 0; row < blocks * seq; row++) {
    const query = row % seq;
    const base = row * seq;
    let max = -Infinity;
    for (let key = 0; key <= query; key++) max = Math.max(max, scores[base + key] * scale);
    let sum = 0;
    for (let key = 0; key <= query; key++) {
      const e = Math.exp(scores[base + key] * scale - max);
      scores[base + key] = e;
      sum += e;
    }
    for (let key = 0; key <= query; key++) scores[base + key] /= sum;
    scores.fill(0, base + query + 1, base + seq);
  }
}

/** Gradients of all adapter parameters given dL/dy. */
export async function adapterBackward(
  params: AdapterParams,
  config: AttentionAdapterConfig,
  saved: AdapterActivations,
  dOutput: Float32Array,
  engine: MatMulEngine,
): Promise<AdapterParams> {
  const { hidden, heads, kvHeads, headDim } = config;
  const { batch, seq } = saved.input;
  const tokens = batch * seq;
  const rep = heads / kvHeads;
  const groups = batch * kvHeads;

  // y = x + attended·Wo: the residual carries no parameters, x needs no gradient.
  const [wo, dAttended] = await Promise.all([
    engine.matmul(saved.attended, dOutput, { m: heads * headDim, k: tokens, n: hidden, transA: true }),
    engine.matmul(dOutput, params.wo, { m: tokens, k: hidden, n: heads * headDim, transB: true }),
  ]);
  const dAttendedHeads = toHeads(dAttended, batch, seq, heads, headDim);
  const [dProbabilities, dvHeads] = await Promise.all([
    engine.matmul(dAttendedHeads, saved.v, { batch: groups, m: rep * seq, k: headDim, n: seq, transB: true }),
    engine.matmul(saved.probabilities, dAttendedHeads, {
      batch: groups,
      m: seq,
      k: rep * seq,
      n: headDim,
      transA: true,
    }),
  ]);
  const dScores = softmaxBackward(saved.probabilities, dProbabilities, seq, 1 / Math.sqrt(headDim));
  const [dqHeads, dkHeads] = await Promise.all([
    engine.matmul(dScores, saved.k, { batch: groups, m: rep * seq, k: seq, n: headDim }),
    engine.matmul(dScores, saved.q, { batch: groups, m: seq, k: rep * seq, n: headDim, transA: true }),
  ]);
  const dq = fromHeads(dqHeads, batch, seq, heads, headDim);
  const dk = fromHeads(dkHeads, batch, seq, kvHeads, headDim);
  const dv = fromHeads(dvHeads, batch, seq, kvHeads, headDim);
  applyRope(dq, heads, saved.rope, true);
  applyRope(dk, kvHeads, saved.rope, true);

  const weightGrad = (d: Float32Array, width: number) =>
    engine.matmul(saved.normed, d, { m: hidden, k: tokens, n: width, transA: true });
  const inputGrad = (d: Float32Array, weight: Float32Array, width: number) =>
    engine.matmul(d, weight, { m: tokens, k: width, n: hidden, transB: true });
  const [wq, wk, wv, fromQ, fromK, fromV] = await Promise.all([
    weightGrad(dq, heads * headDim),
    weightGrad(dk, kvHeads * headDim),
    weightGrad(dv, kvHeads * headDim),
    inputGrad(dq, params.wq, heads * headDim),
    inputGrad(dk, params.wk, kvHeads * headDim),
    inputGrad(dv, params.wv, kvHeads * headDim),
  ]);
  const dNormed = fromQ;
  for (let i = 0; i < dNormed.length; i++) dNormed[i] += fromK[i] + fromV[i];
  const inputNorm = new Float32Array(hidden);
  rmsNormBackward(saved.input.hidden, params.inputNorm, saved.inverseRms, dNormed, inputNorm);
  return { inputNorm, wq, wk, wv, wo };
}

/** dL/dscores = scale · P ∘ (dP − Σ_keys dP∘P), row by row; masked entries have P = 0 and get 0. */
function softmaxBackward(
  probabilities: Float32Array,
  dProbabilities: Float32Array,
  seq: number,
  scale: number,
): Float32Array {
  const out = new Float32Array(probabilities.length);
  for (let base = 0; base < probabilities.length; base += seq) {
    let dot = 0;
    for (let key = 0; key < seq; key++) dot += probabilities[base + key] * dProbabilities[base + key];
    for (let key = 0; key < seq; key++)
      out[base + key] = scale * probabilities[base + key] * (dProbabilities[base + key] - dot);
  }
  return out;
}
