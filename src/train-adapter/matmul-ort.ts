/**
 * MatMulEngine on onnxruntime: one tiny cached session per transpose variant, [batch, m, k] · [batch, k, n].
 * MLAS runs these at ~100 GFLOP/s on one core of the 2-core dev machine against ~2 for the JS kernels, which
 * is what makes training at hidden size 4096 feasible. Small products stay in JS, where a session call's
 * ~20 µs overhead would dominate.
 */
import { GraphBuilder } from '../onnx/graph-builder.ts';
import { encodeModel } from '../onnx/model-io.ts';
import { createSession, float32Tensor, type ModelSession } from '../runtime/session.ts';
import { checkShape, matmulSync, type MatMulEngine, type MatMulShape } from './matmul.ts';

/** Below this many multiply-adds the JS kernel is faster than a session call. */
const SMALL_PRODUCT = 32 * 1024;

function matmulModel(transA: boolean, transB: boolean): Uint8Array {
  const graph = new GraphBuilder('matmul');
  const a = graph.input('A', 'float32', ['batch', 'a1', 'a2']);
  const b = graph.input('B', 'float32', ['batch', 'b1', 'b2']);
  const transpose = (x: string) => graph.op('Transpose', [x], { attributes: { perm: [0, 2, 1] } });
  const product = graph.op('MatMul', [transA ? transpose(a) : a, transB ? transpose(b) : b]);
  graph.output(product, 'float32', ['batch', 'm', 'n'], 'C');
  return encodeModel(graph.build());
}

export async function createOrtMatMul(options: { threads?: number } = {}): Promise<MatMulEngine> {
  const sessions = new Map<string, Promise<ModelSession>>();
  const sessionFor = (transA: boolean, transB: boolean) => {
    const key = `${transA}${transB}`;
    if (!sessions.has(key)) {
      sessions.set(key, createSession(matmulModel(transA, transB), { threads: options.threads }, `matmul(${key})`));
    }
    return sessions.get(key)!;
  };
  return {
    name: `onnxruntime${options.threads ? ` (${options.threads} threads)` : ''}`,
    async matmul(a: Float32Array, b: Float32Array, shape: MatMulShape) {
      const batch = checkShape(a, b, shape);
      const { m, k, n } = shape;
      if (batch * m * k * n < SMALL_PRODUCT) return matmulSync(a, b, shape);
      const session = await sessionFor(Boolean(shape.transA), Boolean(shape.transB));
      const outputs = await session.run({
        A: float32Tensor(a, shape.transA ? [batch, k, m] : [batch, m, k]),
        B: float32Tensor(b, shape.transB ? [batch, n, k] : [batch, k, n]),
      });
      return outputs.C.data as Float32Array;
    },
    async release() {
      for (const session of sessions.values()) await (await session).release();
      sessions.clear();
    },
  };
}
