import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder, float } from '../../src/onnx/graph-builder.ts';
import { encodeModel } from '../../src/onnx/model-io.ts';
import { createSession, float32Tensor, tensorToFloat32 } from '../../src/runtime/session.ts';
import { HatError } from '../../src/errors.ts';

test(
  'a built graph runs: symbolic dims, fp16 initializer, typed attributes, ' + 'shared constants, renamed outputs',
  async () => {
    const b = new GraphBuilder('tiny');
    const x = b.input('x', 'float32', ['batch', 2]);
    const w = b.initializer('w', Float32Array.of(1, 2, 3, 4), [2, 2], 'float16');
    const wf = b.op('Cast', [w], { attributes: { to: 1 } });
    const y = b.op('Gemm', [x, wf], { name: 'gemm', attributes: { alpha: float(2), transB: 1 } });
    assert.equal(b.int64([0, 1]), b.int64([0, 1]), 'identical int64 constants are shared');
    b.output(y, 'float32', ['batch', 2], 'y');
    assert.throws(
      () => b.input('x', 'float32', [1]),
      (e: HatError) => e.code === 'INTERNAL',
    );
    const session = await createSession(encodeModel(b.build()));
    const out = await session.run({ x: float32Tensor(Float32Array.of(1, 1, 0, 1), [2, 2]) });
    // 2 · x · wᵀ, w = [[1, 2], [3, 4]]
    assert.deepEqual(Array.from(tensorToFloat32(out.y)), [6, 14, 4, 8]);
    await session.release();
  },
);
