/**
 * Training throughput on synthetic pairs (not a test; run by hand):
 *   node --import tsx test/train-adapter/bench-training.ts [hidden] [heads] [vocab] [batch] [seq] [steps] [threads]
 * Prints tokens/s and peak RSS. Defaults: the default model's scale (256 wide, 8 heads, 4096 vocab, 4×128).
 */
import { initAdapterParams, type AttentionAdapterConfig } from '../../src/train-adapter/attention-adapter.ts';
import { createOrtMatMul } from '../../src/train-adapter/matmul-ort.ts';
import { arraySource, collect, teacherSource } from '../../src/train-adapter/pair-source.ts';
import { normalArray, seededRandom } from '../../src/random.ts';
import { trainAttentionAdapter } from '../../src/train-adapter/train-attention.ts';

const [hidden = 256, heads = 8, vocab = 4096, batch = 4, seq = 128, steps = 20, threads = 0] = process.argv
  .slice(2)
  .map(Number);
const config: AttentionAdapterConfig = {
  hidden,
  heads,
  kvHeads: heads,
  headDim: hidden / heads,
  ropeTheta: 10000,
  normEps: 1e-5,
};
const random = seededRandom(1);
const head = {
  normWeight: new Float32Array(hidden).fill(1),
  eps: 1e-5,
  lmHead: normalArray(random, hidden * vocab, 1 / Math.sqrt(hidden)),
  vocab,
};
const engine = await createOrtMatMul({ threads: threads || undefined });
const teacher = initAdapterParams(config, { seed: 3, outputScale: 1 });
const batches = await collect(teacherSource({ config, teacher, head, batch, seq, batchesPerPass: 2, seed: 5, engine }));
const result = await trainAttentionAdapter(
  arraySource(batches, hidden),
  head,
  { config, epochs: Math.ceil(steps / 2), maxSteps: steps, lr: 1e-3, engine },
  undefined,
);
await engine.release();
const last = result.history.at(-1)!;
console.log(
  JSON.stringify({
    hidden,
    heads,
    vocab,
    batch,
    seq,
    threads: threads || 'default',
    engine: engine.name,
    steps: result.steps,
    tokensPerSecond: Math.round(result.tokensPerSecond),
    msPerStep: Math.round((result.seconds * 1000) / result.steps),
    loss: last.loss,
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  }),
);
