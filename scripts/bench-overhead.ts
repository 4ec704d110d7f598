/**
 * Serving overhead (not a test), with no emulated network delay:
 *  1. cloud: a verification round (k+1 hidden states on a cache of `past` positions) through serve-cloud — ws,
 *     frame codec, scheduler, worker thread — against the bare onnxruntime run of the middle part, same shapes;
 *  2. device: its own time per round outside model runs and outside waiting for the cloud (HatGenerator's
 *     deviceOverheadMsPerRound) over a real generation;
 *  3. the platform's floor (overhead/floor.ts): stand-in servers that only busy-wait the bare run time.
 *   npm run bench:overhead [-- --split DIR | --config qwen2.5-0.5b | --hidden 512 --layers 6] [--rows 5] [--past 128]
 *     [--rounds 200]
 * Without --split it generates a random Llama (a preset's shape, or --hidden 512 --layers 6 by default) and splits it
 * 2 / rest / 0.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { llamaConfig, presetConfig } from '../src/models/config.ts';
import { writeLlamaOnnx } from '../src/models/llama-onnx.ts';
import { randomWeights } from '../src/models/weights.ts';
import { splitModel } from '../src/split/split.ts';
import { silentReporter } from '../src/reporter.ts';
import { spawnCloud } from '../src/apps/spawn-cloud.ts';
import { manifestHash, openPart, readManifest } from '../src/runtime/split-dir.ts';
import { HEADER_BYTES } from '../src/runtime/protocol/frame.ts';
import { CloudClient } from '../src/runtime/device/cloud-client.ts';
import { openDeviceParts } from '../src/runtime/device/device-parts.ts';
import { connectDeviceGenerator, GREEDY } from '../src/runtime/device/device-generator.ts';
import { splitTokenizerIfAny } from '../src/bench/prompts.ts';
import { measureFloor } from './overhead/floor.ts';

const { values } = parseArgs({
  options: {
    split: { type: 'string' },
    config: { type: 'string' },
    rows: { type: 'string', default: '5' },
    past: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '200' },
    hidden: { type: 'string', default: '512' },
    layers: { type: 'string', default: '6' },
  },
});
const rows = Number(values.rows),
  past = Number(values.past),
  rounds = Number(values.rounds);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let cleanup = () => {};
let split = values.split;
let description = `split ${split}`;
if (!split) {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-overhead-'));
  const hidden = Number(values.hidden),
    layers = Number(values.layers);
  const config = values.config
    ? presetConfig(values.config)
    : llamaConfig({
        vocabSize: 4096,
        hiddenSize: hidden,
        intermediateSize: Math.round(hidden * 2.75),
        layers,
        heads: hidden / 64,
        kvHeads: Math.max(1, hidden / 256),
        maxPositions: 4096,
      });
  await writeLlamaOnnx(config, randomWeights({ seed: 1 }), join(dir, 'model.onnx'));
  await splitModel({ model: join(dir, 'model.onnx'), out: join(dir, 'split'), verify: false }, silentReporter);
  split = join(dir, 'split');
  const shape = values.config ? `${values.config}-shaped Llama` : 'Llama';
  description =
    `random ${shape} hidden ${config.hiddenSize}, ${config.layers} layers ` +
    `(2 device / ${config.layers - 2} cloud / head)`;
  cleanup = () => rmSync(dir, { recursive: true, force: true });
}
const manifest = readManifest(split);
const d = manifest.hidden.size;
const context = new Float32Array(past * d).map((_, i) => Math.sin(i) * 0.5);
const verify = new Float32Array(rows * d).map((_, i) => Math.cos(i) * 0.5);

// 1. The bare middle part in this process and the same round through serve-cloud (one worker, no emulated link),
// interleaved round by round so background load hits both alike.
const middle = await openPart(split, manifest, 'middle');
await middle.step({ hidden: context }, past);
const cloud = await spawnCloud(split, ['--workers', '1']);
const bare: number[] = [];
const served: number[] = [];
const cloudCompute: number[] = [];
try {
  const client = await CloudClient.connect({
    url: cloud.url,
    manifestHash: manifestHash(manifest),
    hiddenSize: d,
    wire: 'fp32',
  });
  await client.forward(context, past, 0, { allPositions: false });
  for (let i = 0; i < rounds; i++) {
    middle.truncate(past);
    const t = performance.now();
    await middle.step({ hidden: verify }, rows);
    bare.push(performance.now() - t);
    const r = await client.forward(verify, rows, past, { allPositions: true });
    served.push(r.roundTripMs);
    cloudCompute.push(r.computeMs);
  }
  client.close();
  await middle.session.release();

  // 2. Device overhead per round during real generations: U-shape rounds, and — when the split has an adapter —
  // speculative rounds as run-device makes them (auto threshold), without and with parallel drafting.
  const hasAdapter = manifest.adapter !== undefined;
  const tokenizer = splitTokenizerIfAny(split);
  const prompt = tokenizer
    ? tokenizer.encode(readFileSync(new URL('../src/bench/held-out-passage.txt', import.meta.url), 'utf8')).slice(0, 96)
    : Array.from({ length: 64 }, (_, i) => (i * 31 + 7) % Math.min(4000, manifest.model?.vocabSize ?? 4000));
  const deviceRuns: Array<{ label: string; speculative: boolean; parallelDrafting: boolean }> = [
    { label: 'U-shape rounds (no drafts)', speculative: false, parallelDrafting: false },
    ...(hasAdapter
      ? [
          { label: 'speculative rounds, auto threshold', speculative: true, parallelDrafting: false },
          {
            label: 'speculative rounds + parallel drafting (1 branch, the default)',
            speculative: true,
            parallelDrafting: true,
          },
        ]
      : []),
  ];
  const deviceOverhead: Array<{ label: string; ms: number; rounds: number; tokensPerRound: number }> = [];
  for (const run of deviceRuns) {
    const parts = await openDeviceParts(split, manifest, { withAdapter: run.speculative });
    const device = await connectDeviceGenerator({
      parts,
      cloud: { url: cloud.url, wire: 'fp16' },
      sampling: GREEDY,
      draftThreshold: 'auto',
      maxDraft: 6,
    });
    const result = await device.generator.generate(prompt, {
      maxNewTokens: 128,
      speculative: run.speculative,
      parallelDrafting: run.parallelDrafting,
      parallelBranches: 1,
      chunk: 'off',
    });
    device.close();
    deviceOverhead.push({
      label: run.label,
      ms: result.metrics.deviceOverheadMsPerRound,
      rounds: result.metrics.rounds,
      tokensPerRound: result.metrics.tokensPerRound,
    });
  }

  const b = median(bare),
    s = median(served),
    c = median(cloudCompute);
  // What serving adds, round by round: the round trip less the worker's own run. Comparing the round trip with the
  // bare run instead mixes in how fast the same run happens to be in another process, which varies by ±20 % here.
  const fixed = median(served.map((ms, i) => ms - cloudCompute[i]));
  // 3. The floor: what stand-in servers that do nothing but wait the bare run time add on this machine.
  const floor = await measureFloor(b, HEADER_BYTES + rows * d * 4, 300);
  console.log(`# serving overhead, no emulated link — ${new Date().toISOString()}`);
  console.log(
    `machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} cores; model: ${description}; ` +
      `${rounds} rounds of ${rows} rows on a ${past}-position cache, medians`,
  );
  console.log('\n| | ms per verification round |');
  console.log('|---|---:|');
  console.log(`| bare onnxruntime run of middle.onnx (this process) | ${b.toFixed(3)} |`);
  console.log(`| serve-cloud's own run time (worker thread, reported) | ${c.toFixed(3)} |`);
  console.log(`| round trip through serve-cloud (ws + codec + scheduler + worker) | ${s.toFixed(3)} |`);
  console.log(
    `\nserve-cloud adds ${fixed.toFixed(3)} ms per round (round trip less its own run, median) ` +
      `= ${((fixed / b) * 100).toFixed(1)} % of the bare run (target ≤ 10 %)`,
  );
  console.log(`(round trip less the bare run: ${(s - b).toFixed(3)} ms = ${(((s - b) / b) * 100).toFixed(1)} %)`);
  const pct = (ms: number) => `${ms.toFixed(3)} ms = ${((ms / b) * 100).toFixed(1)} %`;
  console.log(
    `floor on this machine — a stand-in WebSocket server that busy-waits ${b.toFixed(3)} ms per frame ` +
      `(no model, no codec): ` +
      `on its event loop ${pct(floor.eventLoop)}; with one worker-thread hop ${pct(floor.workerHop)}`,
  );
  for (const run of deviceOverhead) {
    console.log(
      `device time per round outside model runs and cloud waits, ${run.label}: ` +
        `${run.ms.toFixed(3)} ms over ${run.rounds} rounds, ${run.tokensPerRound} tokens per round (target ≤ 1 ms)`,
    );
  }
  if (!hasAdapter) console.log('(no adapter in this split: speculative rounds not measured)');
} finally {
  await cloud.stop();
  cleanup();
}
