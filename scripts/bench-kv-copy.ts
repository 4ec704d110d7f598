/**
 * What cross-device batching costs in cache copies (issue 13 §4; a benchmark, not a test). serve-cloud's padded
 * batch (src/runtime/cloud/padded-batch.ts) gathers every session's past into one batch feed and splits each
 * session's present back into a cache of its own; this times those copies against the onnxruntime run itself, for
 * `--sessions` sessions each verifying `--rows` rows on a past of `--past` positions, and times the same requests
 * run one by one (batching off) for the throughput ratio.
 *   npm run bench:kv [-- --split DIR] [--sessions 16] [--past 1024] [--rows 5] [--runs 5]
 * Without --split it writes a random-weight Qwen2.5-0.5B-shaped Llama (vocabulary cut to 2,048: only the middle
 * part is run) and splits it 2 / 22 / head. The caches are random finite values of the real shapes: the copies and
 * the run cost the same whatever the values are.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { presetConfig } from '../src/models/config.ts';
import { writeLlamaOnnx } from '../src/models/llama-onnx.ts';
import { randomWeights } from '../src/models/weights.ts';
import { splitModel } from '../src/split/split.ts';
import { silentReporter } from '../src/reporter.ts';
import { partIO, readManifest } from '../src/runtime/split-dir.ts';
import { createSession, makeTensor, type Tensor } from '../src/runtime/session.ts';
import { PartRunner, type KvState } from '../src/runtime/part-runner.ts';
import { PaddedBatchRunner, type BatchEntry } from '../src/runtime/cloud/padded-batch.ts';

const { values } = parseArgs({
  options: {
    split: { type: 'string' },
    sessions: { type: 'string', default: '16' },
    past: { type: 'string', default: '1024' },
    rows: { type: 'string', default: '5' },
    runs: { type: 'string', default: '5' },
  },
});
const sessions = Number(values.sessions),
  past = Number(values.past),
  rows = Number(values.rows),
  runs = Number(values.runs);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let split = values.split ? resolve(values.split) : undefined;
let description = `split ${split}`;
let cleanup = () => {};
if (!split) {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-kv-'));
  cleanup = () => rmSync(dir, { recursive: true, force: true });
  const config = { ...presetConfig('qwen2.5-0.5b'), vocabSize: 2048 };
  process.stdout.write('writing a random Qwen2.5-0.5B-shaped model and splitting it...\n');
  await writeLlamaOnnx(config, randomWeights({ seed: 1 }), join(dir, 'model.onnx'));
  await splitModel({ model: join(dir, 'model.onnx'), out: join(dir, 'split'), verify: false }, silentReporter);
  split = join(dir, 'split');
  const shape = `hidden ${config.hiddenSize}, ${config.layers} layers`;
  description = `random Qwen2.5-0.5B-shaped Llama (${shape}, 2 device / ${config.layers - 2} cloud)`;
}

try {
  const manifest = readManifest(split);
  const io = partIO(manifest, 'middle');
  const session = await createSession(join(split, manifest.parts.middle.file), { threads: cpus().length }, 'middle');
  const layout = manifest.batching?.mode === 'single-row' ? 'right' : 'left';
  const shapes = new Map(session.inputs.map((i) => [i.name, i.shape]));
  const d = manifest.hidden.size;
  let seed = 1;
  const random = (n: number) =>
    Float32Array.from({ length: n }, () => (seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5);
  const cache = (): KvState => {
    const tensors = new Map<string, Tensor>();
    for (const pair of io.kv) {
      for (const name of [pair.pastKey, pair.pastValue]) {
        const [, heads, , headDim] = shapes.get(name) as number[];
        tensors.set(name, makeTensor('float32', random(heads * past * headDim), [1, heads, past, headDim]));
      }
    }
    return { length: past, tensors };
  };
  const hidden = random(rows * d);
  let entries: BatchEntry[] = Array.from({ length: sessions }, () => ({
    state: cache(),
    pastLength: past,
    rows,
    hidden,
  }));
  const kvBytes = [...entries[0].state.tensors.values()].reduce((n, t) => n + t.data.length * 4, 0);
  process.stdout.write(
    `${description}; ${cpus().length} cores (${cpus()[0]?.model.trim()}), onnxruntime ${cpus().length} threads\n` +
      `${sessions} sessions × ${rows} rows on a past of ${past} positions (${(kvBytes / 2 ** 20).toFixed(1)} MiB ` +
      `of KV each, ${((kvBytes * sessions) / 2 ** 20).toFixed(0)} MiB in all), ${runs} runs after a warm-up\n`,
  );

  // Batched: each run continues from the caches the previous one returned (rolled back to `past`, as a
  // verification that rejected its drafts would be), so the reused buffers are what serving reuses.
  const batcher = new PaddedBatchRunner(session, io, layout);
  const copy: number[] = [];
  const run: number[] = [];
  for (let r = 0; r <= runs; r++) {
    const batch = await batcher.run(entries);
    entries = entries.map((e, i) => ({ ...e, state: batch.results[i].state }));
    if (r === 0) continue;
    copy.push(batch.copyMs);
    run.push(batch.runMs);
  }
  const share = copy.map((c, i) => c / (c + run[i]));

  // Batching off: the same requests, one onnxruntime run each (restore, roll back, run, keep the cache).
  const solo = PartRunner.fromSession(session, io);
  const soloRounds: number[] = [];
  for (let r = 0; r < Math.min(runs, 3); r++) {
    const started = performance.now();
    for (const entry of entries) {
      solo.restore(entry.state);
      solo.truncate(past);
      await solo.step({ hidden }, rows);
      solo.snapshot({ exclusive: true });
    }
    soloRounds.push(performance.now() - started);
  }
  const batched = median(copy.map((c, i) => c + run[i]));
  const lines = [
    `padded batch of ${sessions}: median ${batched.toFixed(0)} ms a run — onnxruntime ${median(run).toFixed(0)} ms, ` +
      `cache gather + split-back ${median(copy).toFixed(0)} ms`,
    `  copy share of the batched run: median ${(median(share) * 100).toFixed(1)} % ` +
      `(runs: ${share.map((s) => (s * 100).toFixed(1)).join(', ')} %)`,
    `one request per run (batching off): ${median(soloRounds).toFixed(0)} ms for the same ${sessions} requests ` +
      `→ batching ${(median(soloRounds) / batched).toFixed(2)}× the throughput`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  await session.release();
} finally {
  cleanup();
}
