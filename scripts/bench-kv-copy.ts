/**
 * What cross-device batching costs in cache copies (issue 13 §4; a benchmark, not a test). serve-cloud's padded
 * batch (src/runtime/cloud/padded-batch.ts) gathers every session's past into one batch feed, and each session keeps
 * a view into the batch's presents (no copy back while the batch stays in use, as here where the same sessions run
 * every round; a fleet's copy share is in serve-cloud's /metrics); this times that against the onnxruntime run, for
 * `--sessions` sessions each verifying `--rows` rows on a past of `--past` positions (growing by `--keep` per
 * round), and times the same requests
 * run one by one (batching off) for the throughput ratio.
 *   npm run bench:kv [-- --split DIR] [--sessions 16] [--past 1024] [--rows 5] [--runs 5] [--warmup 2] [--keep 1]
 *   [--threads N] [--gather] [--shortest F]
 *   (lists: --past 128,1024). The same sessions batch every round, so their presents are fed back in place as the
 *   next pasts where the split allows it (padded-batch.ts); --gather gathers every past every round instead.
 *   --shortest F spreads the sessions' pasts evenly from --past down to F × --past (ragged pasts, padded to the
 *   longest, as a fleet's are; default 1: all equal).
 * `npm run bench:kv` starts it with serve-cloud's glibc malloc settings (src/runtime/cloud/malloc-tunables.ts).
 * Without --split it writes a random-weight Qwen2.5-0.5B-shaped Llama (vocabulary cut to 2,048: only the middle
 * part is run) and splits it 2 / 22 / head. The caches are random finite values of the real shapes: the copies and
 * the run cost the same whatever the values are.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { configFrom } from '../src/models/config.ts';
import { writeLlamaOnnx } from '../src/models/llama-onnx.ts';
import { randomWeights } from '../src/models/weights.ts';
import { splitModel } from '../src/split/split.ts';
import { silentReporter } from '../src/reporter.ts';
import { partIO, readManifest } from '../src/runtime/split-dir.ts';
import { createSession, makeTensor, type Tensor } from '../src/runtime/session.ts';
import { PartRunner, type KvState } from '../src/runtime/part-runner.ts';
import { PaddedBatchRunner, bucketed, type BatchEntry } from '../src/runtime/cloud/padded-batch.ts';
import { batchingOf } from '../src/runtime/cloud/serve.ts';
import { missingMallocTunables } from '../src/runtime/cloud/malloc-tunables.ts';

const { values } = parseArgs({
  options: {
    split: { type: 'string' },
    sessions: { type: 'string', default: '16' },
    past: { type: 'string', default: '1024' },
    rows: { type: 'string', default: '5' },
    runs: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    keep: { type: 'string', default: '1' },
    threads: { type: 'string' },
    gather: { type: 'boolean', default: false },
    shortest: { type: 'string', default: '1' },
  },
});
const list = (text: string) => text.split(',').map(Number);
const runs = Number(values.runs);
// The first runs of a configuration are several times slower (memory first touched; 4–5 s against 0.2–0.3 s for a
// 16 × 1,024 batch on this VM), so they are discarded.
const warmup = Number(values.warmup);
// Positions each session keeps per round: 1 = the verified token only (every draft rejected), up to --rows.
const keep = Number(values.keep);
// The shortest session's past as a share of --past (1: all equal).
const shortest = Number(values.shortest);
if (!(shortest > 0 && shortest <= 1)) {
  process.stderr.write(`bench-kv: --shortest ${values.shortest} is not a share in (0, 1] (e.g. --shortest 0.5)\n`);
  process.exit(2);
}
// serve-cloud's default: all cores for one worker (a fleet bench pins its cloud to one core: --threads 1).
const threads = Number(values.threads ?? cpus().length);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let split = values.split ? resolve(values.split) : undefined;
let description = `split ${split}`;
let cleanup = () => {};
if (!split) {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-kv-'));
  cleanup = () => rmSync(dir, { recursive: true, force: true });
  const config = configFrom('qwen2.5-0.5b', { vocabSize: 2048 });
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
  const session = await createSession(join(split, manifest.parts.middle.file), { threads }, 'middle');
  const layout = manifest.batching?.mode === 'single-row' ? 'right' : 'left';
  const shapes = new Map(session.inputs.map((i) => [i.name, i.shape]));
  const d = manifest.hidden.size;
  let seed = 1;
  const random = (n: number) =>
    Float32Array.from({ length: n }, () => (seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5);
  const cache = (past: number): KvState => {
    const tensors = new Map<string, Tensor>();
    for (const pair of io.kv) {
      for (const name of [pair.pastKey, pair.pastValue]) {
        const [, heads, , headDim] = shapes.get(name) as number[];
        tensors.set(name, makeTensor('float32', random(heads * past * headDim), [1, heads, past, headDim]));
      }
    }
    return { length: past, tensors };
  };
  // As serve-cloud does, unless --gather asks for the gather every round (the cost in-place feeding removes).
  const inPlace = !values.gather && (await batchingOf(split, manifest)).inPlace;
  const batcher = new PaddedBatchRunner(session, io, layout, { inPlace });
  const solo = PartRunner.fromSession(session, io);
  process.stdout.write(
    `${description}; ${cpus().length} cores (${cpus()[0]?.model.trim()}), onnxruntime ${threads} thread(s), ` +
      `${missingMallocTunables().length === 0 ? "serve-cloud's" : 'WITHOUT serve-cloud’s'} glibc malloc settings; ` +
      `medians of ${runs} runs after ${warmup} warm-up runs, batched and one-by-one rounds alternating\n`,
  );

  /**
   * One configuration. Batched rounds continue from the caches the previous one returned, each session keeping
   * `keep` of its new positions (the rest rolled back, as a verification's rejected drafts are), so pasts grow as
   * serving's do; each is followed by the same requests one onnxruntime run each (restore, roll back, run, keep the
   * cache).
   */
  async function measure(sessions: number, past: number, rows: number, report = true) {
    const hidden = random(rows * d);
    const pasts = Array.from({ length: sessions }, (_, i) =>
      Math.round(past * (1 - (1 - shortest) * (sessions > 1 ? i / (sessions - 1) : 0))),
    );
    let entries: BatchEntry[] = pasts.map((p) => ({
      state: cache(p),
      pastLength: p,
      rows,
      hidden,
    }));
    let soloStates = entries.map((e) => e.state as KvState);
    const copy: number[] = [];
    const run: number[] = [];
    const oneByOne: number[] = [];
    let inPlaceRuns = 0;
    for (let r = 0; r < warmup + runs; r++) {
      const batch = await batcher.run(entries);
      const lengths = entries.map((e) => e.pastLength);
      entries = entries.map((e, i) => ({ ...e, state: batch.results[i].state, pastLength: e.pastLength + keep }));
      const started = performance.now();
      const previous = soloStates;
      soloStates = [];
      for (const [i, state] of previous.entries()) {
        solo.restore(state);
        solo.truncate(lengths[i]);
        await solo.step({ hidden }, rows);
        soloStates.push(solo.snapshot({ exclusive: true }));
      }
      if (r < warmup) continue;
      oneByOne.push(performance.now() - started);
      copy.push(batch.copyMs);
      if (batch.inPlace) inPlaceRuns++;
      run.push(batch.runMs);
    }
    if (!report) return;
    // The plain-copy floor of a gather, at the longest past these rounds gathered (round r ran at past + r·keep).
    const grown = (warmup + runs - 1) * keep;
    const lastPasts = pasts.map((p) => p + grown);
    const floor = inPlaceRuns < runs ? copyFloor(bucketed(past + grown), lastPasts) : undefined;
    const pastText = pasts.at(-1)! < past ? `${pasts.at(-1)}–${past}` : `${past}`;
    const kvMiB = [...soloStates[0].tensors.values()].reduce((n, t) => n + t.data.length * 4, 0) / 2 ** 20;
    const batched = median(copy.map((c, i) => c + run[i]));
    const share = copy.map((c, i) => c / (c + run[i]));
    process.stdout.write(
      `${sessions} sessions × ${rows} rows, past ${pastText} (${kvMiB.toFixed(1)} MiB of KV for the longest): ` +
        `padded run ${batched.toFixed(1)} ms = onnxruntime ${median(run).toFixed(1)} + copies ` +
        `${median(copy).toFixed(1)} (copy share ${(median(share) * 100).toFixed(1)} %, runs ` +
        `${share.map((x) => (x * 100).toFixed(0)).join('/')} %; pasts fed in place in ${inPlaceRuns}/${runs}); ` +
        `one by one ${median(oneByOne).toFixed(1)} ms ` +
        `→ batching ${(median(oneByOne) / batched).toFixed(2)}×\n`,
    );
    if (floor !== undefined) {
      process.stdout.write(
        `  floor: the same gather as plain typed-array copies (${floor.mib.toFixed(0)} MiB from fresh buffers into ` +
          `reused ones, this thread) takes ${floor.ms.toFixed(1)} ms, ` +
          `${((floor.ms / (floor.ms + median(run))) * 100).toFixed(1)} % of a run with this onnxruntime time\n`,
      );
    }
  }

  /**
   * What gathering `sessions` pasts of `past` positions into a `width`-wide feed costs as nothing but copies: for
   * every KV input, each session's heads copied from a buffer written just before (as a run's presents are) into a
   * reused one. Median of --runs.
   */
  function copyFloor(width: number, pasts: number[]): { ms: number; mib: number } {
    const sessions = pasts.length;
    const inputs = io.kv.flatMap((pair) => [pair.pastKey, pair.pastValue]);
    const targets = inputs.map((name) => {
      const [, heads, , headDim] = shapes.get(name) as number[];
      return { heads, headDim, data: new Float32Array(sessions * heads * width * headDim) };
    });
    const times: number[] = [];
    let bytes = 0;
    for (let r = 0; r < warmup + runs; r++) {
      const sources = targets.map((t) => new Float32Array(t.data.length).fill(r + 1));
      const started = performance.now();
      bytes = 0;
      targets.forEach(({ heads, headDim, data }, k) => {
        for (let b = 0; b < sessions; b++) {
          for (let h = 0; h < heads; h++) {
            const at = ((b * heads + h) * width + (width - pasts[b])) * headDim;
            data.set(sources[k].subarray(at, at + pasts[b] * headDim), at);
            bytes += pasts[b] * headDim * 4;
          }
        }
      });
      if (r >= warmup) times.push(performance.now() - started);
    }
    return { ms: median(times), mib: bytes / 2 ** 20 };
  }

  // A process's first runs are slower still, whatever their configuration: the first one is run once unreported.
  await measure(list(values.sessions!)[0], list(values.past!)[0], list(values.rows!)[0], false);
  for (const sessions of list(values.sessions!))
    for (const past of list(values.past!)) for (const rows of list(values.rows!)) await measure(sessions, past, rows);
  await session.release();
} finally {
  cleanup();
}
