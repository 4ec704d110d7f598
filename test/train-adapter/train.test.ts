import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initAdapterParams, type AttentionAdapterConfig } from '../../src/train-adapter/attention-adapter.ts';
import { HatError } from '../../src/errors.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import { AdamW, DEFAULT_ADAMW, learningRate } from '../../src/train-adapter/optimizer.ts';
import type { OutputHead } from '../../src/train-adapter/output-head.ts';
import {
  arraySource,
  bufferedSource,
  collect,
  teacherSource,
  type PairSource,
} from '../../src/train-adapter/pair-source.ts';
import { normalArray, seededRandom } from '../../src/random.ts';
import { trainAttentionAdapter } from '../../src/train-adapter/train-attention.ts';

const config: AttentionAdapterConfig = {
  hidden: 32,
  heads: 4,
  kvHeads: 2,
  headDim: 8,
  ropeTheta: 10000,
  normEps: 1e-5,
};
const random = seededRandom(11);
const head: OutputHead = {
  normWeight: new Float32Array(32).fill(1),
  eps: 1e-5,
  lmHead: normalArray(random, 32 * 40, 0.5),
  vocab: 40,
};
const teacher = initAdapterParams(config, { seed: 99, outputScale: 1.5 });
const problem = (seed: number, batches: number) =>
  teacherSource({ config, teacher, head, batch: 4, seq: 12, batchesPerPass: batches, seed, engine: jsMatMul });

test('the learning rate warms up linearly, then decays along a cosine to its floor', () => {
  const schedule = { peak: 1, warmupSteps: 10, totalSteps: 110, floor: 0.1 };
  assert.equal(learningRate(0, schedule), 0.1);
  assert.equal(learningRate(9, schedule), 1);
  assert.ok(Math.abs(learningRate(10, schedule) - 1) < 1e-12);
  assert.ok(Math.abs(learningRate(60, schedule) - 0.55) < 1e-12);
  assert.ok(Math.abs(learningRate(110, schedule) - 0.1) < 1e-12);
  assert.ok(learningRate(30, schedule) > learningRate(31, schedule));
});

test('AdamW clips the global gradient norm and does not decay norm weights', () => {
  const params = initAdapterParams(
    { hidden: 2, heads: 1, kvHeads: 1, headDim: 2, ropeTheta: 1e4, normEps: 1e-5 },
    { seed: 1 },
  );
  const before = { ...params, inputNorm: params.inputNorm.slice(), wq: params.wq.slice() };
  const zero = Object.fromEntries(
    Object.entries(params).map(([k, v]) => [k, new Float32Array(v.length)]),
  ) as typeof params;
  const optimizer = new AdamW(params, { ...DEFAULT_ADAMW, weightDecay: 0.5 });
  optimizer.step(zero, 0.1);
  assert.deepEqual([...params.inputNorm], [...before.inputNorm]); // no gradient, no decay
  assert.ok(Math.abs(params.wq[0] - before.wq[0] * 0.95) < 1e-6); // decoupled decay only
  const huge = { ...zero, wo: new Float32Array(params.wo.length).fill(1000) };
  assert.ok(Math.abs(new AdamW(params, DEFAULT_ADAMW).step(huge, 0.1) - 1000 * Math.sqrt(params.wo.length)) < 1e-3);
});

test('training on a learnable synthetic problem drives the held-out loss down and the top-1 agreement up', async () => {
  const validation = arraySource(await collect(problem(2, 2)), config.hidden);
  const progressFractions: number[] = [];
  const reporter = {
    info() {},
    warn() {},
    progress: () => ({
      update: (_: string, f?: number) => {
        progressFractions.push(f ?? -1);
      },
      succeed() {},
      fail() {},
    }),
  };
  const result = await trainAttentionAdapter(
    bufferedSource(problem(1, 100), 1 << 24),
    head,
    // HAT's CE weight: the Smooth-L1 bound below is for a loss led by the regression term.
    { config, epochs: 2, lr: 1e-2, validation, engine: jsMatMul, init: { seed: 5 }, loss: { ceWeight: 0.1 } },
    reporter,
  );
  assert.equal(result.steps, 200);
  assert.equal(result.tokens, 200 * 48);
  const before = result.validationBefore!,
    after = result.validationAfter!;
  assert.ok(after.smoothL1 < 0.5 * before.smoothL1, `Smooth-L1 ${before.smoothL1} → ${after.smoothL1}`);
  assert.ok(after.crossEntropy < before.crossEntropy, `CE ${before.crossEntropy} → ${after.crossEntropy}`);
  assert.ok(
    after.top1Agreement > before.top1Agreement + 0.15,
    `top-1 ${before.top1Agreement} → ${after.top1Agreement}`,
  );
  assert.equal(progressFractions.at(-1), 1);
  // Up to 200 steps, every step is recorded.
  assert.deepEqual(
    result.history.map((r) => r.step),
    Array.from({ length: 200 }, (_, i) => i),
  );
  assert.ok(result.history.every((r) => Number.isFinite(r.loss)));
});

test('a time budget stops training early with the learning rate schedule completed', async (t) => {
  // A clock the test drives: every batch costs 7 ms, so on any machine a 1 s budget affords 142 steps
  // (1000 / 7 = 142.9), taken 7 ms apart: 0.994 s.
  t.mock.timers.enable({ apis: ['Date'], now: 0 });
  const inner = bufferedSource(problem(1, 10), 1 << 24);
  const ticking: PairSource = {
    ...inner,
    async *batches() {
      for await (const batch of inner.batches()) {
        t.mock.timers.tick(7);
        yield batch;
      }
    },
  };
  const result = await trainAttentionAdapter(ticking, head, {
    config,
    epochs: 10000,
    lr: 1e-2,
    maxSeconds: 1,
    engine: jsMatMul,
  });
  assert.equal(result.steps, 142);
  assert.equal(result.seconds, 0.994);
  const last = result.history.at(-1)!;
  assert.equal(last.step, result.steps - 1);
  // The schedule was refitted to the budget, so the last step ran at the floor of its cosine decay.
  assert.ok(last.lr < 0.3 * 1e-2, `final learning rate ${last.lr}`);
  assert.ok(Math.max(...result.history.map((r) => r.lr)) > 0.9 * 1e-2, 'the peak rate was reached');
});

test('bad training options are HatErrors', async () => {
  const source: PairSource = problem(1, 1);
  await assert.rejects(
    trainAttentionAdapter(source, head, { config, epochs: 0, lr: 1e-3, engine: jsMatMul }),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  await assert.rejects(
    trainAttentionAdapter(source, head, {
      config: { ...config, hidden: 16, headDim: 4 },
      epochs: 1,
      lr: 1e-3,
      engine: jsMatMul,
    }),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  await assert.rejects(
    trainAttentionAdapter(source, head, { config: { ...config, kvHeads: 3 }, epochs: 1, lr: 1e-3, engine: jsMatMul }),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  assert.throws(
    () => initAdapterParams(config, { from: { wq: new Float32Array(3) } }),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
});

test('a buffered source replays a pass that fits and keeps streaming one that does not', async () => {
  let passes = 0;
  const counting = (inner: PairSource): PairSource => ({
    ...inner,
    batches: () => {
      passes++;
      return inner.batches();
    },
  });
  const small = bufferedSource(counting(problem(3, 2)), 1 << 20);
  const first = await collect(small);
  const second = await collect(small);
  assert.equal(passes, 1);
  assert.deepEqual(
    second.map((b) => b.target[0]),
    first.map((b) => b.target[0]),
  );
  passes = 0;
  const large = bufferedSource(counting(problem(3, 2)), 1000);
  await collect(large);
  await collect(large);
  assert.equal(passes, 2);
});
