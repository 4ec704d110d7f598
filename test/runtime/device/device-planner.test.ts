import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { readManifest } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts, type DeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { connectDeviceGenerator, GREEDY } from '../../../src/runtime/device/device-generator.ts';
import { devicePlanner } from '../../../src/runtime/device/prefill.ts';
import type { ChunkPlanner } from '../../../src/runtime/chunk-planner.ts';
import type { LinkSpec } from '../../../src/runtime/link.ts';
import type { SplitManifest } from '../../../src/split/manifest.ts';
import { HatDevice } from '../../../src/api/hat-device.ts';
import { makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { repoRoot } from '../../helpers/shared-fixtures.ts';

// An EMULATED uplink slow enough that uploading dominates every chunk (about 1.3 ms a row against the device's and
// the cloud's hundredths): a measured planner then takes its smallest chunk, 32, which divides the 192-token prompt
// evenly. A session that starts with the 64-token probes has not used what the device already measured.
const SLOW_UPLINK: LinkSpec = {
  name: 'slow-uplink',
  up: { bandwidth: 100_000, latencyMs: 1, jitterMs: 0 },
  down: { bandwidth: Infinity, latencyMs: 1, jitterMs: 0 },
};
const prompt = Array.from({ length: 192 }, (_, i) => 1 + ((i * 7) % 60));

let server: CloudServer;
let port: number;
let manifest: SplitManifest;
let parts: DeviceParts;

before(async () => {
  const { split } = await makeSmallSplit();
  manifest = readManifest(split);
  parts = await openDeviceParts(split, manifest, { withAdapter: false });
  ({ server, port } = await serveSplit(split, { maxSessions: 4, maxTokensPerFrame: 512, maxContext: 512 }));
});
after(() => server.stop());

/** One session on fresh device caches: its prompt chunk sizes and its tokens. */
async function session(planner?: ChunkPlanner): Promise<{ chunks: number[]; ids: number[] }> {
  for (const part of [parts.input, parts.output]) part.truncate(0);
  const device = await connectDeviceGenerator({
    parts,
    cloud: { url: `ws://127.0.0.1:${port}`, wire: 'fp32', link: SLOW_UPLINK },
    sampling: GREEDY,
    draftThreshold: 0,
    maxDraft: 1,
    planner,
  });
  try {
    const { ids, metrics } = await device.generator.generate(prompt, {
      maxNewTokens: 4,
      speculative: false,
      parallelDrafting: false,
      chunk: 'auto',
    });
    return { chunks: metrics.prefillChunks.map((c) => c.tokens), ids };
  } finally {
    device.close();
  }
}

test("a device's planner carries over: its second session skips the probe chunks", async () => {
  const planner = devicePlanner(manifest, 'fp32');
  const first = await session(planner);
  assert.equal(first.chunks[0], 64, 'an unmeasured device starts with 64-token probes');
  assert.ok(planner.measured, 'the first session measured the device and the link');
  const second = await session(planner);
  assert.equal(second.chunks[0], 32, `upload-bound, the measured planner starts small: ${second.chunks.join(' ')}`);
  assert.equal(
    second.chunks.reduce((a, b) => a + b, 0),
    prompt.length,
  );
  assert.deepEqual(second.ids, first.ids, 'chunk sizes never change the output');
});

test('a session without the device planner probes again', async () => {
  const { chunks } = await session();
  assert.equal(chunks[0], 64);
});

test('HatDevice keeps one planner across requests, each on its own cloud session', async (t) => {
  const split = join(repoRoot, 'fixtures', 'default-split');
  if (!existsSync(join(split, 'manifest.json'))) return t.skip('SKIPPED: fixtures/default-split is missing');
  const opened: unknown[] = [];
  // The cloud's log names each session it opens.
  const logger = {
    log: (event: string, fields?: Record<string, unknown>) => {
      if (event === 'session-open') opened.push(fields?.session);
    },
  };
  const cloud = await serveSplit(split, { maxSessions: 2, maxTokensPerFrame: 512, maxContext: 512, logger });
  const device = await HatDevice.open(split, {
    cloud: `ws://127.0.0.1:${cloud.port}`,
    link: SLOW_UPLINK,
    speculative: false,
  });
  try {
    const chunks = async () =>
      (await device.generate({ ids: prompt }, { maxTokens: 2 })).metrics!.prefillChunks.map((c) => c.tokens);
    assert.equal((await chunks())[0], 64, 'the first request probes');
    const second = await chunks();
    assert.equal(second[0], 32, `the second request is sized from the first's measurements: ${second.join(' ')}`);
    assert.equal(opened.length, 2, 'one cloud session per request');
    assert.notEqual(opened[0], opened[1]);
  } finally {
    await device.close();
    await cloud.server.stop();
  }
});

test('a planner built for another wire is refused before any cloud session opens', async () => {
  const before = server.sessionCount;
  await assert.rejects(session(devicePlanner(manifest, 'fp16')), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'INTERNAL');
    assert.match(error.message, /planner is for 64 bytes per row; the fp32 wire sends 128/);
    return true;
  });
  assert.equal(server.sessionCount, before);
});
