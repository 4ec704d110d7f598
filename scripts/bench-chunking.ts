/**
 * Chunked-prefill benchmark (not a test): time to first token of one long prompt with `--chunk off`, a sweep of
 * fixed chunk sizes and `auto`, through a real serve-cloud process over an EMULATED link, next to the pipeline
 * lower bound computed from the auto runs' own measured stage times:
 *   bound = (device time of the first chunk) + (the slowest stage's total) + (cloud + downlink of the last chunk)
 * with stage totals device Σd_i, uplink Σ(bytes_i/β) + latency, cloud Σ(queue_i + compute_i).
 *
 *   npm run bench:chunking [-- --split DIR] [--hidden 512 --layers 4] [--prompt 1024] [--link wifi] [--wire fp32]
 *     [--repeats 3]
 *
 * Without --split it generates a random-weight Llama (hidden/layers as given) and splits it 1 / rest / 0.
 * Device and cloud share this machine's cores, so their compute does not overlap as it would on two machines.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { llamaConfig } from '../src/models/config.ts';
import { writeLlamaOnnx } from '../src/models/llama-onnx.ts';
import { randomWeights } from '../src/models/weights.ts';
import { splitModel } from '../src/split/split.ts';
import { silentReporter } from '../src/reporter.ts';
import { spawnCloud } from '../src/apps/spawn-cloud.ts';
import { readManifest } from '../src/runtime/split-dir.ts';
import { openDeviceParts } from '../src/runtime/device/device-parts.ts';
import { connectDeviceGenerator, GREEDY } from '../src/runtime/device/device-generator.ts';
import type { DeviceMetrics } from '../src/runtime/device/hat-generator.ts';
import { describeLink, parseLinkSpec } from '../src/runtime/link.ts';
import type { WireDTypeName } from '../src/runtime/protocol/frame.ts';

const { values } = parseArgs({
  options: {
    split: { type: 'string' },
    hidden: { type: 'string', default: '512' },
    layers: { type: 'string', default: '4' },
    prompt: { type: 'string', default: '1024' },
    link: { type: 'string', default: 'wifi' },
    wire: { type: 'string', default: 'fp32' },
    repeats: { type: 'string', default: '3' },
    sizes: { type: 'string', default: '32,64,128,256,512' },
  },
});
const link = parseLinkSpec(values.link!);
const wire = values.wire as WireDTypeName;
const repeats = Number(values.repeats);
const promptLength = Number(values.prompt);

async function prepareSplit(): Promise<{ split: string; model: string; cleanup: () => void }> {
  if (values.split) return { split: values.split, model: `split ${values.split}`, cleanup: () => {} };
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-chunk-'));
  const hidden = Number(values.hidden);
  const config = llamaConfig({
    vocabSize: 4096,
    hiddenSize: hidden,
    intermediateSize: Math.round(hidden * 2.75),
    layers: Number(values.layers),
    heads: hidden / 64,
    kvHeads: Math.max(1, hidden / 256),
    maxPositions: 4096,
  });
  await writeLlamaOnnx(config, randomWeights({ seed: 1 }), join(dir, 'model.onnx'));
  await splitModel(
    { model: join(dir, 'model.onnx'), out: join(dir, 'split'), inputLayers: 1, verify: false },
    silentReporter,
  );
  return {
    split: join(dir, 'split'),
    model:
      `random Llama hidden ${hidden}, ${values.layers} layers ` +
      `(1 device / ${Number(values.layers) - 1} cloud / head)`,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function lowerBound(m: DeviceMetrics): number {
  const chunks = m.prefillChunks;
  const upload = (bytes: number) => (bytes / link.up.bandwidth) * 1000;
  const device = chunks.reduce((s, c) => s + c.deviceMs, 0);
  const uplink = chunks.reduce((s, c) => s + upload(c.bytesUp), 0) + link.up.latencyMs;
  const cloud = chunks.reduce((s, c) => s + c.computeMs, 0);
  const first = chunks[0],
    last = chunks[chunks.length - 1];
  const down = link.down.latencyMs;
  const candidates = [
    device + upload(last.bytesUp) + link.up.latencyMs + last.computeMs + down,
    first.deviceMs + uplink + last.computeMs + down,
    first.deviceMs + upload(first.bytesUp) + link.up.latencyMs + cloud + down,
  ];
  return Math.max(...candidates);
}

const { split, model, cleanup } = await prepareSplit();
const cloud = await spawnCloud(split, ['--max-tokens-per-frame', String(promptLength)]);
try {
  const manifest = readManifest(split);
  const parts = await openDeviceParts(split, manifest, { withAdapter: false });
  const prompt = Array.from({ length: promptLength }, (_, i) => ((i * 7919 + 13) % 1000) + 3);
  const run = async (chunk: 'off' | 'auto' | number) => {
    parts.input.truncate(0);
    const device = await connectDeviceGenerator({
      parts,
      cloud: { url: cloud.url, wire, link },
      sampling: GREEDY,
      draftThreshold: 1,
      maxDraft: 1,
    });
    try {
      return (
        await device.generator.generate(prompt, { maxNewTokens: 1, speculative: false, parallelDrafting: false, chunk })
      ).metrics;
    } finally {
      device.close();
    }
  };
  await run('off'); // warm-up: first runs are slow in onnxruntime
  const settings: Array<'off' | 'auto' | number> = ['off', ...values.sizes!.split(',').map(Number), 'auto'];
  const rows: Array<{ chunk: string; ttftMs: number; chunks: string; bound?: number }> = [];
  for (const chunk of settings) {
    const runs: DeviceMetrics[] = [];
    for (let r = 0; r < repeats; r++) runs.push(await run(chunk));
    rows.push({
      chunk: String(chunk),
      ttftMs: median(runs.map((m) => m.ttftMs)),
      chunks: chunk === 'auto' ? runs[runs.length - 1].chunkSizes.join('+') : `${runs[0].chunkSizes.length}×`,
      bound: chunk === 'auto' ? median(runs.map(lowerBound)) : undefined,
    });
  }
  const off = rows[0].ttftMs;
  const auto = rows[rows.length - 1];
  const best = rows.slice(1, -1).reduce((a, b) => (b.ttftMs < a.ttftMs ? b : a));
  const bytesPerToken = manifest.hidden.size * (wire === 'fp32' ? 4 : wire === 'fp16' ? 2 : 1);
  console.log(`# chunked prefill, ${promptLength}-token prompt — ${new Date().toISOString()}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} cores (device and cloud share them)`);
  console.log(
    `model: ${model}; wire ${wire} (${bytesPerToken} B/token); ${describeLink(link)}; median of ${repeats} runs`,
  );
  console.log('\n| --chunk | TTFT ms | × off | chunks |');
  console.log('|---|---:|---:|---|');
  for (const r of rows)
    console.log(`| ${r.chunk} | ${r.ttftMs.toFixed(1)} | ${(r.ttftMs / off).toFixed(2)} | ${r.chunks} |`);
  console.log(
    `\npipeline lower bound (from the auto runs' measured stages): ${auto.bound!.toFixed(1)} ms; ` +
      `auto / bound = ${(auto.ttftMs / auto.bound!).toFixed(2)}`,
  );
  console.log(
    `best fixed size: ${best.chunk} (${best.ttftMs.toFixed(1)} ms); ` +
      `auto / best fixed = ${(auto.ttftMs / best.ttftMs).toFixed(2)}; auto / off = ${(auto.ttftMs / off).toFixed(2)}`,
  );
} finally {
  await cloud.stop();
  cleanup();
}
