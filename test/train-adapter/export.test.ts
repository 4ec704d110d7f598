/**
 * adapter.onnx run by onnxruntime must equal the TypeScript forward: one shot, incrementally on a non-empty
 * cache (multi-token step), with left padding, with fp16 I/O, and for the linear adapter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  adapterForward,
  initAdapterParams,
  type AttentionAdapterConfig,
} from '../../src/train-adapter/attention-adapter.ts';
import { ADAPTER_KV, attentionAdapterModel, exportAdapter } from '../../src/train-adapter/export-onnx.ts';
import { savedAdapterWeights } from '../../src/train-adapter/layer-weights.ts';
import { linearForward } from '../../src/train-adapter/linear-adapter.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import { normalArray, seededRandom } from '../../src/random.ts';
import { encodeModel } from '../../src/onnx/model-io.ts';
import { PartRunner } from '../../src/runtime/part-runner.ts';
import {
  createSession,
  float32Tensor,
  float32ToFloat16,
  int64Tensor,
  makeTensor,
  tensorToFloat32,
  zerosTensor,
  type Feeds,
  type ModelSession,
} from '../../src/runtime/session.ts';

const OUTPUT = 'middle_to_output_hidden';
const random = seededRandom(5);

function maxDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Rows [from, to) of each of `batch` sequences of `seq` rows × width. */
function rows(x: Float32Array, batch: number, seq: number, width: number, from: number, to: number): Float32Array {
  const out = new Float32Array(batch * (to - from) * width);
  for (let b = 0; b < batch; b++)
    out.set(x.subarray((b * seq + from) * width, (b * seq + to) * width), b * (to - from) * width);
  return out;
}

async function step(
  session: ModelSession,
  hidden: Float32Array,
  batch: number,
  seq: number,
  width: number,
  positions: number[],
  mask: number[],
  past: { key: Feeds[string]; value: Feeds[string] },
) {
  const out = await session.run({
    hidden_states: float32Tensor(hidden, [batch, seq, width]),
    attention_mask: int64Tensor(mask, [batch, mask.length / batch]),
    position_ids: int64Tensor(positions, [batch, seq]),
    [ADAPTER_KV.pastKey]: past.key,
    [ADAPTER_KV.pastValue]: past.value,
  });
  return { output: tensorToFloat32(out[OUTPUT]), key: out[ADAPTER_KV.presentKey], value: out[ADAPTER_KV.presentValue] };
}

for (const config of [
  { hidden: 16, heads: 4, kvHeads: 4, headDim: 4, ropeTheta: 10000, normEps: 1e-5 },
  { hidden: 24, heads: 6, kvHeads: 2, headDim: 8, ropeTheta: 500000, normEps: 1e-6 },
] satisfies AttentionAdapterConfig[]) {
  test(
    `exported attention adapter (${config.heads} heads, ${config.kvHeads} kv) ` +
      `equals the TS forward, in one shot and on a cache`,
    async () => {
      const params = initAdapterParams(config, { seed: 1, outputScale: 1 });
      params.inputNorm = normalArray(random, config.hidden, 1);
      const batch = 2,
        seq = 7,
        width = config.hidden;
      const hidden = normalArray(random, batch * seq * width, 2);
      const positions = Array.from({ length: batch * seq }, (_, i) => (i % seq) + 3);
      const reference = (await adapterForward(params, config, { batch, seq, hidden, positions }, jsMatMul)).output;

      const session = await createSession(encodeModel(attentionAdapterModel(params, config, { outputName: OUTPUT })), {
        threads: 1,
      });
      const empty = {
        key: zerosTensor('float32', [batch, config.kvHeads, 0, config.headDim]),
        value: zerosTensor('float32', [batch, config.kvHeads, 0, config.headDim]),
      };
      const whole = await step(session, hidden, batch, seq, width, positions, new Array(batch * seq).fill(1), empty);
      assert.ok(maxDifference(whole.output, reference) < 1e-4, `one shot: ${maxDifference(whole.output, reference)}`);
      assert.deepEqual(whole.key.dims, [batch, config.kvHeads, seq, config.headDim]);

      // 4 tokens, then 3 more on top of that cache.
      const positionsOf = (from: number, to: number) =>
        [0, 1].flatMap((b) => positions.slice(b * seq + from, b * seq + to));
      const first = await step(
        session,
        rows(hidden, batch, seq, width, 0, 4),
        batch,
        4,
        width,
        positionsOf(0, 4),
        new Array(batch * 4).fill(1),
        empty,
      );
      const second = await step(
        session,
        rows(hidden, batch, seq, width, 4, 7),
        batch,
        3,
        width,
        positionsOf(4, 7),
        new Array(batch * 7).fill(1),
        first,
      );
      assert.ok(maxDifference(first.output, rows(reference, batch, seq, width, 0, 4)) < 1e-4);
      assert.ok(
        maxDifference(second.output, rows(reference, batch, seq, width, 4, 7)) < 1e-4,
        `cached step: ${maxDifference(second.output, rows(reference, batch, seq, width, 4, 7))}`,
      );
      assert.ok(maxDifference(tensorToFloat32(second.key), tensorToFloat32(whole.key)) < 1e-5);
      assert.ok(maxDifference(tensorToFloat32(second.value), tensorToFloat32(whole.value)) < 1e-5);

      // Left padding: sequence 1's first token masked out behaves as if it were absent.
      const mask = [...new Array(seq).fill(1), 0, ...new Array(seq - 1).fill(1)];
      const padded = await step(session, hidden, batch, seq, width, positions, mask, empty);
      const unpadded = (
        await adapterForward(
          params,
          config,
          {
            batch: 1,
            seq: seq - 1,
            hidden: rows(hidden, batch, seq, width, 1, seq).subarray((seq - 1) * width),
            positions: positions.slice(seq + 1),
          },
          jsMatMul,
        )
      ).output;
      assert.ok(
        maxDifference(rows(padded.output, batch, seq, width, 1, seq).subarray((seq - 1) * width), unpadded) < 1e-4,
      );
      await session.release();
    },
  );
}

test('fp16 input and output keep the maths in fp32 and match within half precision', async () => {
  const config: AttentionAdapterConfig = {
    hidden: 16,
    heads: 2,
    kvHeads: 1,
    headDim: 8,
    ropeTheta: 10000,
    normEps: 1e-5,
  };
  const params = initAdapterParams(config, { seed: 2, outputScale: 1 });
  const hidden = normalArray(random, 5 * 16, 1).map((v) => Math.round(v * 64) / 64); // exactly representable in fp16
  const positions = [0, 1, 2, 3, 4];
  const reference = (await adapterForward(params, config, { batch: 1, seq: 5, hidden, positions }, jsMatMul)).output;
  const session = await createSession(
    encodeModel(attentionAdapterModel(params, config, { outputName: OUTPUT, ioType: 'float16' })),
    { threads: 1 },
  );
  const out = await session.run({
    hidden_states: makeTensor('float16', float32ToFloat16(hidden), [1, 5, 16]),
    attention_mask: int64Tensor([1, 1, 1, 1, 1], [1, 5]),
    position_ids: int64Tensor(positions, [1, 5]),
    [ADAPTER_KV.pastKey]: zerosTensor('float32', [1, 1, 0, 8]),
    [ADAPTER_KV.pastValue]: zerosTensor('float32', [1, 1, 0, 8]),
  });
  assert.equal(out[OUTPUT].type, 'float16');
  assert.ok(maxDifference(tensorToFloat32(out[OUTPUT]), reference) < 1e-2);
  await session.release();
});

test('the exported linear adapter equals linearForward and saves to disk', async () => {
  const adapter = { hidden: 8, weight: normalArray(random, 64, 0.3), bias: normalArray(random, 8, 1) };
  const x = normalArray(random, 3 * 8, 1);
  const path = join(mkdtempSync(join(tmpdir(), 'hat-adapter-')), 'adapter.onnx');
  assert.deepEqual(await exportAdapter(path, { kind: 'linear', adapter }, { outputName: OUTPUT }), []);
  const session = await createSession(path, { threads: 1 });
  assert.deepEqual([...session.inputNames], ['hidden_states']);
  const out = await session.run({ hidden_states: float32Tensor(x, [1, 3, 8]) });
  assert.ok(maxDifference(tensorToFloat32(out[OUTPUT]), await linearForward(adapter, x)) < 1e-5);
  await session.release();
});

test("the runtime's PartRunner drives the exported adapter step by step with its cache", async () => {
  const config: AttentionAdapterConfig = {
    hidden: 16,
    heads: 4,
    kvHeads: 2,
    headDim: 4,
    ropeTheta: 10000,
    normEps: 1e-5,
  };
  const params = initAdapterParams(config, { seed: 4, outputScale: 1 });
  const hidden = normalArray(random, 6 * 16, 1);
  const reference = (
    await adapterForward(params, config, { batch: 1, seq: 6, hidden, positions: [0, 1, 2, 3, 4, 5] }, jsMatMul)
  ).output;
  const session = await createSession(encodeModel(attentionAdapterModel(params, config, { outputName: OUTPUT })), {
    threads: 1,
  });
  const runner = PartRunner.fromSession(session, { hiddenInput: 'hidden_states', output: OUTPUT, kv: [ADAPTER_KV] });
  const first = await runner.step({ hidden: hidden.subarray(0, 4 * 16) }, 4);
  runner.truncate(3); // a rejected draft: position 3 is computed again below
  const second = await runner.step({ hidden: hidden.subarray(3 * 16) }, 3);
  assert.ok(maxDifference(first.data, reference.subarray(0, 4 * 16)) < 1e-4);
  assert.ok(maxDifference(second.data, reference.subarray(3 * 16)) < 1e-4);
  assert.equal(runner.length, 6);
  await session.release();
});

test('a big adapter keeps its weights in adapter.onnx.data beside the model', async () => {
  const config: AttentionAdapterConfig = {
    hidden: 16,
    heads: 2,
    kvHeads: 2,
    headDim: 8,
    ropeTheta: 10000,
    normEps: 1e-5,
  };
  const params = initAdapterParams(config, { seed: 8, outputScale: 1 });
  const path = join(mkdtempSync(join(tmpdir(), 'hat-adapter-')), 'adapter.onnx');
  assert.deepEqual(
    await exportAdapter(path, { kind: 'attention', params, config }, { outputName: OUTPUT, inlineLimitBytes: 0 }),
    ['adapter.onnx.data'],
  );
  const hidden = normalArray(random, 2 * 16, 1);
  const session = await createSession(path, { threads: 1 });
  const out = await step(session, hidden, 1, 2, 16, [0, 1], [1, 1], {
    key: zerosTensor('float32', [1, 2, 0, 8]),
    value: zerosTensor('float32', [1, 2, 0, 8]),
  });
  const reference = (await adapterForward(params, config, { batch: 1, seq: 2, hidden, positions: [0, 1] }, jsMatMul))
    .output;
  assert.ok(maxDifference(out.output, reference) < 1e-4);
  await session.release();
  // `--init adapter` reads them back: exactly the trained values, from the data file as from an inline model.
  assert.deepEqual(await savedAdapterWeights(path), params);
});

test('savedAdapterWeights reads an inline adapter back exactly, and nothing from a linear one', async () => {
  const config: AttentionAdapterConfig = { hidden: 8, heads: 2, kvHeads: 1, headDim: 4, ropeTheta: 1e4, normEps: 1e-5 };
  const params = initAdapterParams(config, { seed: 9, outputScale: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'hat-adapter-'));
  await exportAdapter(join(dir, 'attention.onnx'), { kind: 'attention', params, config }, { outputName: OUTPUT });
  assert.deepEqual(await savedAdapterWeights(join(dir, 'attention.onnx')), params);
  const adapter = { hidden: 8, weight: normalArray(random, 64, 0.3), bias: normalArray(random, 8, 1) };
  await exportAdapter(join(dir, 'linear.onnx'), { kind: 'linear', adapter }, { outputName: OUTPUT });
  assert.equal(await savedAdapterWeights(join(dir, 'linear.onnx')), undefined);
});
