/**
 * Finite-difference checks of the hand-written backward pass: every adapter parameter tensor and dL/dy of the
 * full loss (Smooth-L1 + CE through the frozen norm and head), on a tiny GQA config with the JS kernels.
 * Float32 forward passes make single-entry differences noisy, so each tensor is checked along random
 * directions (central difference of L(θ ± h·u) against ⟨∇L, u⟩) and on its largest-gradient entries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  adapterBackward,
  adapterForward,
  initAdapterParams,
  PARAM_NAMES,
  type AdapterParams,
  type AttentionAdapterConfig,
  type SequenceBatch,
} from '../../src/train-adapter/attention-adapter.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import { draftLoss, type LossOptions, type OutputHead } from '../../src/train-adapter/output-head.ts';
import { normalArray, seededRandom } from '../../src/random.ts';

const config: AttentionAdapterConfig = { hidden: 8, heads: 4, kvHeads: 2, headDim: 4, ropeTheta: 10000, normEps: 1e-5 };
const options: LossOptions = { ceWeight: 0.7, smoothL1Beta: 0.5 }; // a large CE weight so its gradient is visible
const random = seededRandom(42);
const vocab = 11;
const head: OutputHead = {
  normWeight: Float32Array.from(normalArray(random, config.hidden, 0.3), (v) => 1 + v),
  eps: 1e-5,
  lmHead: normalArray(random, config.hidden * vocab, 1),
  vocab,
};
const input: SequenceBatch = {
  batch: 2,
  seq: 3,
  hidden: normalArray(random, 2 * 3 * config.hidden, 1),
  positions: [0, 1, 2, 5, 6, 7],
};
const target = normalArray(random, input.hidden.length, 1.5);
const tokens = [3, 0, 10, 7, -1, 2]; // -1: a row without a next-token target
const params = initAdapterParams(config, { seed: 7, outputScale: 1 });
params.inputNorm = Float32Array.from(params.inputNorm, () => 1 + random.normal() * 0.3);

async function lossAt(p: AdapterParams): Promise<number> {
  const forward = await adapterForward(p, config, input, jsMatMul);
  return (await draftLoss(head, forward.output, target, tokens, options, jsMatMul, false)).loss.total;
}

function relativeError(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(1e-6, Math.abs(a) + Math.abs(b));
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

test('adapter gradients match finite differences for every parameter tensor', async () => {
  const forward = await adapterForward(params, config, input, jsMatMul);
  const { gradient } = await draftLoss(head, forward.output, target, tokens, options, jsMatMul, true);
  const grads = await adapterBackward(params, config, forward, gradient!, jsMatMul);
  const step = 1e-3;
  for (const name of PARAM_NAMES) {
    const shifted = (direction: Float32Array, sign: number): AdapterParams => ({
      ...params,
      [name]: Float32Array.from(params[name], (v, i) => v + sign * step * direction[i]),
    });
    for (let trial = 0; trial < 3; trial++) {
      const direction = normalArray(random, params[name].length, 1);
      const numeric = ((await lossAt(shifted(direction, 1))) - (await lossAt(shifted(direction, -1)))) / (2 * step);
      const analytic = dot(grads[name], direction);
      assert.ok(
        relativeError(numeric, analytic) < 2e-3,
        `${name} along a random direction: numeric ${numeric}, analytic ${analytic}`,
      );
    }
    const largest = [...grads[name].keys()]
      .sort((a, b) => Math.abs(grads[name][b]) - Math.abs(grads[name][a]))
      .slice(0, 3);
    for (const index of largest) {
      const direction = new Float32Array(params[name].length);
      direction[index] = 1;
      const numeric = ((await lossAt(shifted(direction, 1))) - (await lossAt(shifted(direction, -1)))) / (2 * step);
      assert.ok(
        relativeError(numeric, grads[name][index]) < 2e-3,
        `${name}[${index}]: numeric ${numeric}, analytic ${grads[name][index]}`,
      );
    }
  }
});

test('the loss gradient through the frozen norm and head matches finite differences', async () => {
  const prediction = normalArray(random, input.hidden.length, 1);
  const lossOf = async (y: Float32Array) =>
    (await draftLoss(head, y, target, tokens, options, jsMatMul, false)).loss.total;
  const { gradient, loss } = await draftLoss(head, prediction, target, tokens, options, jsMatMul, true);
  assert.ok(loss.crossEntropy > 0 && loss.smoothL1 > 0);
  const step = 1e-3;
  for (let trial = 0; trial < 4; trial++) {
    const direction = normalArray(random, prediction.length, 1);
    const plus = Float32Array.from(prediction, (v, i) => v + step * direction[i]);
    const minus = Float32Array.from(prediction, (v, i) => v - step * direction[i]);
    const numeric = ((await lossOf(plus)) - (await lossOf(minus))) / (2 * step);
    assert.ok(
      relativeError(numeric, dot(gradient!, direction)) < 2e-3,
      `numeric ${numeric}, analytic ${dot(gradient!, direction)}`,
    );
  }
  // The CE term alone (Smooth-L1 weight is implicit 1, so check CE by difference of two weights).
  const ceOnly = { ...options, ceWeight: 1 };
  const plain = { ...options, ceWeight: 0 };
  const ce = (await draftLoss(head, prediction, target, tokens, ceOnly, jsMatMul, true)).gradient!;
  const l1 = (await draftLoss(head, prediction, target, tokens, plain, jsMatMul, true)).gradient!;
  const direction = normalArray(random, prediction.length, 1);
  const ceAt = async (sign: number) =>
    (
      await draftLoss(
        head,
        Float32Array.from(prediction, (v, i) => v + sign * step * direction[i]),
        target,
        tokens,
        ceOnly,
        jsMatMul,
        false,
      )
    ).loss.crossEntropy;
  const numeric = ((await ceAt(1)) - (await ceAt(-1))) / (2 * step);
  const analytic = dot(ce, direction) - dot(l1, direction);
  assert.ok(relativeError(numeric, analytic) < 2e-3, `CE: numeric ${numeric}, analytic ${analytic}`);
});
