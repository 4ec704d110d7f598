/**
 * The model's frozen output part (final RMSNorm + LM head) and the draft loss computed through it:
 *
 *   L = SmoothL1(y, h_N)  +  w · CE(softmax(head(y)), t)
 *
 * SmoothL1 is averaged over all elements (PyTorch's default, β = 1), CE over the rows with a target. t is the
 * full model's greedy next token (argmax of head(h_N)) rather than the text's next token: a draft is accepted
 * iff it equals the full model's greedy choice, so that — and not the corpus — is what the adapter must
 * imitate, and on self-generated text the two coincide anyway. Rows are processed in chunks so the
 * [rows, vocab] logits stay a few MB whatever the batch.
 */
import { HatError } from '../errors.ts';
import type { MatMulEngine } from './matmul.ts';
import { rmsNorm, rmsNormBackward } from './rmsnorm.ts';

export interface OutputHead {
  /** Final RMSNorm weight [hidden]. */
  normWeight: Float32Array;
  eps: number;
  /** LM head [hidden, vocab] (x·W layout). */
  lmHead: Float32Array;
  vocab: number;
}

export interface LossOptions {
  /** Weight of the cross-entropy term (HAT: 0.1). */
  ceWeight: number;
  /** Smooth-L1 transition point (PyTorch default 1). */
  smoothL1Beta: number;
}

// HAT weighs cross-entropy 0.1; 0.5 drafted better on both models measured (default model: 3.87 against 3.62
// tokens per round on the same 3 M tokens; stories260K likewise), so it is the default.
export const DEFAULT_LOSS: LossOptions = { ceWeight: 0.5, smoothL1Beta: 1 };

export interface LossValue {
  total: number;
  smoothL1: number;
  crossEntropy: number;
  /** Fraction of target rows where head(y)'s argmax equals the target. */
  top1Agreement: number;
  rows: number;
}

/** Tokens-per-chunk bound: logits of one chunk stay under ~16 MB. */
const LOGIT_BUDGET = 4 * 1024 * 1024;

export function hiddenOf(head: OutputHead): number {
  return head.normWeight.length;
}

export function checkHead(head: OutputHead): void {
  const hidden = hiddenOf(head);
  if (head.vocab <= 0 || head.lmHead.length !== hidden * head.vocab) {
    throw new HatError(
      'BAD_OPTION',
      `LM head has ${head.lmHead.length} values, expected hidden ${hidden} × vocab ${head.vocab}`,
    );
  }
}

function chunkRows(head: OutputHead): number {
  return Math.max(1, Math.floor(LOGIT_BUDGET / head.vocab));
}

/** Logits of rows [start, end) of `hidden`, with the norm's state for a backward pass. */
async function logitsOf(head: OutputHead, hidden: Float32Array, start: number, end: number, engine: MatMulEngine) {
  const width = hiddenOf(head);
  const rows = hidden.subarray(start * width, end * width);
  const normed = rmsNorm(rows, head.normWeight, head.eps);
  const logits = await engine.matmul(normed.out, head.lmHead, { m: end - start, k: width, n: head.vocab });
  return { rows, normed, logits };
}

/** Top-1 token and its softmax probability per row: what a draft step sees. */
export async function topTokens(
  head: OutputHead,
  hidden: Float32Array,
  engine: MatMulEngine,
): Promise<{ tokens: Int32Array; probabilities: Float32Array }> {
  const total = hidden.length / hiddenOf(head);
  const tokens = new Int32Array(total);
  const probabilities = new Float32Array(total);
  for (let start = 0; start < total; start += chunkRows(head)) {
    const end = Math.min(total, start + chunkRows(head));
    const { logits } = await logitsOf(head, hidden, start, end, engine);
    for (let r = 0; r < end - start; r++) {
      const row = logits.subarray(r * head.vocab, (r + 1) * head.vocab);
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
      let sum = 0;
      for (let j = 0; j < row.length; j++) sum += Math.exp(row[j] - row[best]);
      tokens[start + r] = best;
      probabilities[start + r] = 1 / sum;
    }
  }
  return { tokens, probabilities };
}

/**
 * The draft loss of prediction y against h_N and the target tokens (negative = no target), and dL/dy when
 * `withGradient` (the head itself is frozen: it gets no gradient).
 */
export async function draftLoss(
  head: OutputHead,
  prediction: Float32Array,
  target: Float32Array,
  targetTokens: ArrayLike<number>,
  options: LossOptions,
  engine: MatMulEngine,
  withGradient: boolean,
): Promise<{ loss: LossValue; gradient?: Float32Array }> {
  const width = hiddenOf(head);
  const total = prediction.length / width;
  if (target.length !== prediction.length || targetTokens.length !== total) {
    throw new HatError(
      'INTERNAL',
      `loss inputs disagree: ${prediction.length} predicted, ${target.length} target values, ` +
        `${targetTokens.length} tokens`,
    );
  }
  const gradient = withGradient ? new Float32Array(prediction.length) : undefined;

  const beta = options.smoothL1Beta;
  let smoothL1 = 0;
  for (let i = 0; i < prediction.length; i++) {
    const diff = prediction[i] - target[i];
    const size = Math.abs(diff);
    smoothL1 += size < beta ? (0.5 * diff * diff) / beta : size - 0.5 * beta;
    if (gradient) gradient[i] = (size < beta ? diff / beta : Math.sign(diff)) / prediction.length;
  }
  smoothL1 /= prediction.length;

  let targetRows = 0;
  for (let r = 0; r < total; r++) if (targetTokens[r] >= 0) targetRows++;
  let crossEntropy = 0;
  let agreed = 0;
  if (targetRows > 0) {
    for (let start = 0; start < total; start += chunkRows(head)) {
      const end = Math.min(total, start + chunkRows(head));
      const { rows, normed, logits } = await logitsOf(head, prediction, start, end, engine);
      for (let r = 0; r < end - start; r++) {
        const token = targetTokens[start + r];
        const row = logits.subarray(r * head.vocab, (r + 1) * head.vocab);
        if (token < 0) {
          row.fill(0);
          continue;
        }
        if (token >= head.vocab)
          throw new HatError('INTERNAL', `target token ${token} is outside the vocabulary of ${head.vocab}`);
        let best = 0;
        for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
        const max = row[best];
        const targetLogit = row[token] - max;
        // One exp per logit: the row becomes exp(logit − max), then dL/dlogits = w · (softmax − onehot) / rows.
        let sum = 0;
        for (let j = 0; j < row.length; j++) {
          const e = Math.exp(row[j] - max);
          row[j] = e;
          sum += e;
        }
        crossEntropy += Math.log(sum) - targetLogit;
        if (best === token) agreed++;
        const scale = options.ceWeight / targetRows / sum;
        for (let j = 0; j < row.length; j++) row[j] *= scale;
        row[token] -= options.ceWeight / targetRows;
      }
      if (!gradient || options.ceWeight === 0) continue;
      const dNormed = await engine.matmul(logits, head.lmHead, {
        m: end - start,
        k: head.vocab,
        n: width,
        transB: true,
      });
      const dRows = rmsNormBackward(rows, head.normWeight, normed.inverseRms, dNormed);
      const slice = gradient.subarray(start * width, end * width);
      for (let i = 0; i < dRows.length; i++) slice[i] += dRows[i];
    }
    crossEntropy /= targetRows;
  }
  const loss: LossValue = {
    total: smoothL1 + options.ceWeight * crossEntropy,
    smoothL1,
    crossEntropy,
    top1Agreement: targetRows > 0 ? agreed / targetRows : 0,
    rows: targetRows,
  };
  return { loss, gradient };
}
