import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startCloud } from '../../../src/runtime/cloud/serve.ts';
import { silentLogger } from '../../../src/runtime/cloud/logger.ts';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { HatError } from '../../../src/errors.ts';
import { addIdentityAdapter, makeSmallSplit } from '../../helpers/runtime-fixtures.ts';

const prompt = [1, 5, 9, 22, 13, 40];

async function generateWhileCloudDies(fallbackLocal: boolean) {
  const { split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const { server, port } = await startCloud({ splitDir: split, host: '127.0.0.1', port: 0, workers: 1, maxSessions: 2, idleTimeoutMs: 60_000, maxTokensPerFrame: 64, maxContext: 128, logger: silentLogger });
  const manifest = readManifest(split);
  const parts = await openDeviceParts(split, manifest, { withAdapter: true });
  const client = await CloudClient.connect({ url: `ws://127.0.0.1:${port}`, manifestHash: manifestHash(manifest), hiddenSize: manifest.hidden.size, wire: 'fp32' });
  const sampler = createSampler({ temperature: 0, topP: 1, seed: 0 });
  const generator = new HatGenerator(parts, client, sampler, new Drafter(parts, sampler, new FixedThresholdPolicy(0.99, 1)));
  let stopping: Promise<void> | undefined;
  const streamed: number[] = [];
  const result = await generator.generate(prompt, {
    maxNewTokens: 20, speculative: true, parallelDrafting: false, chunk: 'off', fallbackLocal,
    onTokens: (ids) => { streamed.push(...ids); if (streamed.length >= 5) stopping ??= server.stop(); },
  });
  await stopping;
  return { result, streamed };
}

test('when the cloud drops mid-generation the device stops with a clear error and keeps the text so far', async () => {
  const { result, streamed } = await generateWhileCloudDies(false);
  assert.ok(result.error instanceof HatError && result.error.code === 'NETWORK', String(result.error));
  assert.ok(result.ids.length >= 5 && result.ids.length < 20, `kept ${result.ids.length} tokens`);
  assert.deepEqual(result.ids, streamed);
});

test('with local fallback the device finishes with its small model and says so', async () => {
  const { result } = await generateWhileCloudDies(true);
  assert.equal(result.error, undefined);
  assert.equal(result.ids.length, 20);
  assert.match(result.metrics.fallback ?? '', /continued with the small model/);
});

test('an unreachable cloud is a one-line NETWORK error', async () => {
  await assert.rejects(
    CloudClient.connect({ url: 'ws://127.0.0.1:9', manifestHash: 'x', hiddenSize: 4, wire: 'fp32', connectTimeoutMs: 2000 }),
    (e: HatError) => e.code === 'NETWORK' && /cannot reach the cloud/.test(e.message),
  );
});
