import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError } from '../../src/errors.ts';
import { jsMatMul } from '../../src/train-adapter/matmul.ts';
import type { OutputHead } from '../../src/train-adapter/output-head.ts';
import { collect } from '../../src/train-adapter/pair-source.ts';
import { tokenPairSource } from '../../src/train-adapter/token-pair-source.ts';

// Width 2, vocab 3: the head's logits are [h0, h1, 0], so argmax picks the larger of h0, h1 (or 2 when both < 0).
const head: OutputHead = {
  normWeight: new Float32Array([1, 1]),
  eps: 1e-6,
  lmHead: new Float32Array([1, 0, 0, 0, 1, 0]),
  vocab: 3,
};

test('token texts become fixed windows, batched through the parts, with greedy targets from h_N', async () => {
  const seen: number[][][] = [];
  const source = tokenPairSource({
    texts: () => [
      [1, 2, 3],
      [4, 5, 6, 7, 8],
      [9, 10, 11, 12, 13, 14],
    ],
    totalTokens: 14,
    batch: 2,
    seq: 3,
    hidden: 2,
    head,
    engine: jsMatMul,
    async computeHidden(ids) {
      seen.push(ids);
      const flat = ids.flat();
      return {
        inputs: Float32Array.from(flat.flatMap((id) => [id, 0])),
        targets: Float32Array.from(flat.flatMap((id) => (id % 2 ? [1, -1] : [-1, 1]))),
      };
    },
  });
  assert.equal(source.batchesPerPass, 2);
  const batches = await collect(source);
  assert.deepEqual(seen, [
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
    [
      [7, 8, 9],
      [10, 11, 12],
    ],
  ]); // windows cross text boundaries; 13, 14 dropped
  assert.deepEqual([...batches[0].targetTokens], [0, 1, 0, 1, 0, 1]);
  assert.deepEqual(Array.from(batches[1].positions), [0, 1, 2, 0, 1, 2]);
  assert.equal((await collect(source)).length, 2); // a second pass reads the texts again
});

test('too little text for one batch is a HatError', () => {
  assert.throws(
    () =>
      tokenPairSource({
        texts: () => [[1, 2]],
        totalTokens: 2,
        batch: 2,
        seq: 3,
        hidden: 2,
        head,
        engine: jsMatMul,
        computeHidden: async () => ({ inputs: new Float32Array(0), targets: new Float32Array(0) }),
      }),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
});
