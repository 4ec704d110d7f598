import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCloud } from '../../../src/runtime/cloud/serve.ts';
import { silentLogger } from '../../../src/runtime/cloud/logger.ts';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator, type HatGenerateOptions } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { AutoDraftPolicy, FixedThresholdPolicy, type DraftPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { addIdentityAdapter, makeSmallSplit } from '../../helpers/runtime-fixtures.ts';

const greedy = createSampler({ temperature: 0, topP: 1, seed: 0 });
const prompt = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17];
const NEW = 24;
let server: CloudServer;
let port: number;
let split: string;
let reference: number[];

before(async () => {
  const made = await makeSmallSplit();
  split = made.split;
  addIdentityAdapter(split);
  ({ server, port } = await startCloud({ splitDir: split, host: '127.0.0.1', port: 0, workers: 1, maxSessions: 8, idleTimeoutMs: 60_000, maxTokensPerFrame: 512, maxContext: 512, logger: silentLogger }));
  const full = await OnnxCausalLm.open(made.model);
  let logits = await full.step(prompt);
  reference = [];
  let token = argmax(logits.data.subarray((logits.rows - 1) * logits.cols));
  for (let i = 0; i < NEW; i++) {
    reference.push(token);
    logits = await full.step([token]);
    token = argmax(logits.data);
  }
});
after(() => server.stop());

async function runHat(options: Partial<HatGenerateOptions>, policy: DraftPolicy = new FixedThresholdPolicy(0, 4), withAdapter = options.speculative !== false) {
  const manifest = readManifest(split);
  const parts = await openDeviceParts(split, manifest, { withAdapter });
  const client = await CloudClient.connect({ url: `ws://127.0.0.1:${port}`, manifestHash: manifestHash(manifest), hiddenSize: manifest.hidden.size, wire: 'fp32' });
  const generator = new HatGenerator(parts, client, greedy, new Drafter(parts, greedy, policy));
  try {
    return await generator.generate(prompt, { maxNewTokens: NEW, speculative: true, parallelDrafting: false, chunk: 'off', ...options });
  } finally {
    client.close();
  }
}

test('U-shape (no drafts) over the real server equals the full model token for token', async () => {
  const out = await runHat({ speculative: false });
  assert.deepEqual(out.ids, reference);
  assert.equal(out.metrics.rounds, NEW - 1);
});

test('an adapter that is loaded but not drafted with leaves U-shape output intact (it used to crash on truncate)', async () => {
  const out = await runHat({ speculative: false }, undefined, true);
  assert.deepEqual(out.ids, reference);
});

test('speculative rounds with forced drafts and rollbacks still equal the full model', async () => {
  const out = await runHat({});
  assert.deepEqual(out.ids, reference);
  assert.ok(out.metrics.rounds < NEW, `rounds ${out.metrics.rounds}`);
});

test('parallel drafting keeps greedy output identical and confirms branches', async () => {
  const out = await runHat({ parallelDrafting: true, predraftAlways: true }, new FixedThresholdPolicy(0, 2));
  assert.deepEqual(out.ids, reference);
  assert.ok(out.metrics.parallelDrafting.branches > 0);
});

test('parallel drafting is skipped on rounds where a branch could hardly be used', async () => {
  // The random model's drafts are rarely both kept, and the device soon measures it: few rounds predraft.
  const gated = await runHat({ parallelDrafting: true }, new FixedThresholdPolicy(0, 2));
  const always = await runHat({ parallelDrafting: true, predraftAlways: true }, new FixedThresholdPolicy(0, 2));
  assert.deepEqual(gated.ids, reference);
  assert.ok(gated.metrics.parallelDrafting.branches <= always.metrics.parallelDrafting.branches / 3,
    `${gated.metrics.parallelDrafting.branches} of ${always.metrics.parallelDrafting.branches} rounds`);
  // Drafts kept only at ≥ 0.9 are likely kept by the verification too, so branching pays (while the measured
  // candidate hit rate allows: it adapts).
  const confident = await runHat({ parallelDrafting: true }, new FixedThresholdPolicy(0.9, 2));
  assert.deepEqual(confident.ids, reference);
  assert.ok(confident.metrics.parallelDrafting.branches >= confident.metrics.rounds / 2, `${confident.metrics.parallelDrafting.branches} of ${confident.metrics.rounds} rounds`);
});

test('parallel drafting on the top-3 candidates keeps greedy output identical and confirms at least as often', async () => {
  const one = await runHat({ parallelDrafting: true, parallelBranches: 1, predraftAlways: true }, new FixedThresholdPolicy(0, 2));
  const three = await runHat({ parallelDrafting: true, parallelBranches: 3, predraftAlways: true }, new FixedThresholdPolicy(0, 2));
  assert.deepEqual(three.ids, reference);
  assert.ok(three.metrics.parallelDrafting.hits >= one.metrics.parallelDrafting.hits, `${three.metrics.parallelDrafting.hits} vs ${one.metrics.parallelDrafting.hits}`);
});

test('chunked prefill (fixed and auto) gives the same first token and continuation', async () => {
  for (const chunk of [3, 5, 'auto'] as const) {
    const out = await runHat({ chunk, speculative: false });
    assert.deepEqual(out.ids, reference, `chunk ${chunk}`);
    assert.ok(out.metrics.chunkSizes.length > 1 || chunk === 'auto');
  }
});

test('the auto draft policy keeps greedy output identical', async () => {
  const out = await runHat({ parallelDrafting: true }, new AutoDraftPolicy(0.3, 6, 1));
  assert.deepEqual(out.ids, reference);
});
