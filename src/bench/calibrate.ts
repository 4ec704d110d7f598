/**
 * Measured per-stage costs that feed the simulation: device input-part time per prompt token, one decode step
 * (input + output part), one draft step (input + adapter + output part), and the cloud's g(X) fitted to the
 * middle part's compute time for batches of X tokens (timed by serve-cloud itself, link not involved).
 */
import { manifestHash } from '../runtime/split-dir.ts';
import { CloudClient } from '../runtime/device/cloud-client.ts';
import type { DeviceParts } from '../runtime/device/device-parts.ts';
import { lastRow } from '../runtime/part-runner.ts';
import { wireBytesPerRow } from '../runtime/protocol/hidden-codec.ts';
import type { WireDTypeName } from '../runtime/protocol/frame.ts';

export interface StageCosts {
  deviceInputMsPerToken: number;
  deviceDecodeStepMs: number;
  /** Undefined without an adapter. */
  draftStepMs?: number;
  cloud: { baseMs: number; perTokenMs: number; samples: Array<{ tokens: number; computeMs: number }> };
  bytesPerToken: number;
  frameHeaderBytes: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeMs(fn: () => Promise<unknown>, repeats: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return median(times);
}

/** Least squares y = a + b·x. */
export function fitLine(points: ReadonlyArray<{ x: number; y: number }>): { a: number; b: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const b = sxx > 0 ? points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx : 0;
  return { a: Math.max(0, my - b * mx), b: Math.max(0, b) };
}

export async function measureStageCosts(
  parts: DeviceParts,
  config: { cloudUrl: string; wire: WireDTypeName },
  repeats = 5,
): Promise<StageCosts> {
  const { manifest } = parts;
  const hidden = manifest.hidden.size;
  const ids = Array.from({ length: 64 }, (_, i) => (i * 31 + 7) % (manifest.model?.vocabSize ?? 64));
  const prefillMs = await timeMs(async () => {
    parts.input.truncate(0);
    await parts.input.step({ ids }, ids.length);
  }, repeats);
  parts.input.truncate(0);
  const h = await parts.input.step({ ids }, ids.length);
  const row = lastRow(h);
  const base = parts.input.length;
  const output = async () => {
    await parts.draftOutput.step({ hidden: row }, 1);
    if (manifest.kv.output.length) parts.draftOutput.truncate(parts.draftOutput.length - 1);
  };
  const decodeStepMs = await timeMs(async () => {
    await parts.input.step({ ids: [ids[0]] }, 1);
    parts.input.truncate(base);
    await output();
  }, repeats);
  let draftStepMs: number | undefined;
  if (parts.adapter) {
    await parts.adapter.step({ hidden: h.data }, ids.length);
    const adapterBase = parts.adapter.length;
    draftStepMs = await timeMs(async () => {
      await parts.input.step({ ids: [ids[0]] }, 1);
      parts.input.truncate(base);
      await parts.adapter!.step({ hidden: row }, 1);
      parts.adapter!.truncate(adapterBase);
      await output();
    }, repeats);
  }

  const client = await CloudClient.connect({
    url: config.cloudUrl,
    manifestHash: manifestHash(manifest),
    hiddenSize: hidden,
    wire: config.wire,
  });
  const samples: Array<{ tokens: number; computeMs: number }> = [];
  try {
    for (const tokens of [1, 2, 4, 8, 16, 32, 64]) {
      const times: number[] = [];
      for (let r = 0; r < repeats; r++) {
        const result = await client.forward(new Float32Array(tokens * hidden).fill(0.01), tokens, 0, {
          allPositions: true,
        });
        times.push(result.computeMs);
      }
      samples.push({ tokens, computeMs: median(times) });
    }
  } finally {
    client.close();
  }
  const { a, b } = fitLine(samples.map((s) => ({ x: s.tokens, y: s.computeMs })));
  return {
    deviceInputMsPerToken: prefillMs / ids.length,
    deviceDecodeStepMs: decodeStepMs,
    draftStepMs,
    cloud: { baseMs: a, perTokenMs: b, samples },
    bytesPerToken: wireBytesPerRow(config.wire, hidden),
    frameHeaderBytes: 52,
  };
}
