/**
 * Speculative sampling end to end: with drafts from the identity adapter (whose distribution differs from the
 * model's), the tokens HAT commits must be distributed as the full model's own samples. Compared on the joint of
 * the 2nd and 3rd generated tokens (both pass through acceptance) with a chi-square test over many seeds.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts, type DeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { makeSampler } from '../../../src/runtime/sampling.ts';
import { llamaConfig } from '../../../src/models/config.ts';
import { addIdentityAdapter, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';

const TRIALS = 400;
const prompt = [3, 1, 4, 1, 5];
const sampling = { temperature: 1, topP: 1 };
let server: CloudServer;
let port: number;
let split: string;
let model: string;

before(async () => {
  // A small vocabulary keeps the joint distribution of two tokens testable with a few hundred samples.
  const made = await makeSmallSplit(
    llamaConfig({ vocabSize: 6, hiddenSize: 32, intermediateSize: 64, layers: 4, heads: 4, kvHeads: 2 }),
    11,
  );
  split = made.split;
  model = made.model;
  addIdentityAdapter(split);
  ({ server, port } = await serveSplit(split, { maxSessions: 4 }));
});
after(() => server.stop());

const key = (ids: number[]) => `${ids[1]},${ids[2]}`;

test(
  "HAT with speculative sampling draws from the full model's distribution " + '(chi-square, joint of tokens 2 and 3)',
  async () => {
    const full = await OnnxCausalLm.open(model);
    const expected = new Map<string, number>();
    for (let seed = 0; seed < TRIALS; seed++) {
      full.truncate(0);
      const { ids } = await generateTokens(full, prompt, {
        maxNewTokens: 3,
        sampler: makeSampler({ ...sampling, seed: 100_000 + seed }),
      });
      expected.set(key(ids), (expected.get(key(ids)) ?? 0) + 1);
    }
    const manifest = readManifest(split);
    const parts: DeviceParts = await openDeviceParts(split, manifest, { withAdapter: true });
    const client = await CloudClient.connect({
      url: `ws://127.0.0.1:${port}`,
      manifestHash: manifestHash(manifest),
      hiddenSize: manifest.hidden.size,
      wire: 'fp32',
    });
    const observed = new Map<string, number>();
    let drafted = 0;
    try {
      for (let seed = 0; seed < TRIALS; seed++) {
        for (const runner of [parts.input, parts.adapter!]) runner.truncate(0);
        const sampler = createSampler({ ...sampling, seed });
        const generator = new HatGenerator(
          parts,
          client,
          sampler,
          new Drafter(parts, sampler, new FixedThresholdPolicy(0, 3)),
        );
        const { ids, metrics } = await generator.generate(prompt, {
          maxNewTokens: 3,
          speculative: true,
          parallelDrafting: false,
          chunk: 'off',
        });
        drafted += metrics.rounds < 2 ? 1 : 0;
        observed.set(key(ids), (observed.get(key(ids)) ?? 0) + 1);
      }
    } finally {
      client.close();
    }
    // Both outcomes of speculative sampling's acceptance must be exercised often, or the chi-square says little about
    // it: with 3 tokens to generate the round after the prefill drafts one token (at most what it can commit), kept in
    // one round, rejected in two. 254 of 400 kept it when measured (binomial spread about ±10); at least a quarter
    // each way leaves room for a change in how acceptance draws its randomness.
    assert.ok(drafted >= TRIALS / 4, `${drafted} of ${TRIALS} trials kept their draft`);
    assert.ok(TRIALS - drafted >= TRIALS / 4, `${TRIALS - drafted} of ${TRIALS} trials rejected their draft`);
    // Two-sample chi-square over outcomes seen at least 5 times in total; rarer ones are pooled.
    const keys = new Set([...expected.keys(), ...observed.keys()]);
    let chi = 0,
      cells = 0,
      pooledA = 0,
      pooledB = 0;
    for (const k of keys) {
      const a = expected.get(k) ?? 0,
        b = observed.get(k) ?? 0;
      if (a + b < 10) {
        pooledA += a;
        pooledB += b;
        continue;
      }
      chi += (a - b) ** 2 / (a + b);
      cells++;
    }
    if (pooledA + pooledB > 0) {
      chi += (pooledA - pooledB) ** 2 / (pooledA + pooledB);
      cells++;
    }
    // Critical value of chi-square at p = 0.001 for up to 40 degrees of freedom is below 73.4.
    const dof = Math.max(1, cells - 1);
    const critical = dof <= 10 ? 29.6 : dof <= 20 ? 45.3 : dof <= 30 ? 59.7 : 73.4;
    assert.ok(chi < critical, `chi-square ${chi.toFixed(1)} with ${dof} dof over ${TRIALS} samples each`);
  },
);
