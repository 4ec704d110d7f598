/**
 * HAT generation on the shared third-party exports (skipped without ../shared): split them, serve the middle
 * part, and check greedy output against the unsplit model decoded one token at a time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitModel } from '../../../src/split/split.ts';
import { silentReporter } from '../../../src/reporter.ts';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import { addIdentityAdapter, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { sharedFixture } from '../../helpers/shared-fixtures.ts';

const NEW = 12;
const prompt = [5, 17, 42, 7, 99, 3];

async function tokenByToken(model: string): Promise<number[]> {
  const full = await OnnxCausalLm.open(model);
  let last = 0;
  // One token per step: the unsplit fixtures cannot run multi-token steps on a cache.
  for (const id of prompt) last = argmax((await full.step([id])).data);
  const ids = [last];
  while (ids.length < NEW) ids.push(argmax((await full.step([ids[ids.length - 1]])).data));
  return ids;
}

for (const name of ['hf-tiny-gpt2-opset17', 'genai-tiny-llama-fp16']) {
  const fixture = sharedFixture(name, 'model.onnx');
  test(`greedy HAT on the ${name} split equals the unsplit model`, { skip: fixture.skip }, async () => {
    const split = join(mkdtempSync(join(tmpdir(), 'hat-fx-')), 'split');
    const { manifest } = await splitModel({ model: fixture.path, out: split }, silentReporter);
    assert.equal(manifest.multiTokenCachedSteps, true, 'the split repairs the traced mask');
    addIdentityAdapter(split);
    const reference = await tokenByToken(fixture.path);
    const { server, port } = await serveSplit(split);
    try {
      for (const speculative of [false, true]) {
        const loaded = readManifest(split);
        const parts = await openDeviceParts(split, loaded, { withAdapter: speculative });
        const client = await CloudClient.connect({
          url: `ws://127.0.0.1:${port}`,
          manifestHash: manifestHash(loaded),
          hiddenSize: loaded.hidden.size,
          wire: 'fp32',
        });
        const sampler = createSampler({ temperature: 0, topP: 1, seed: 0 });
        const generator = new HatGenerator(
          parts,
          client,
          sampler,
          new Drafter(parts, sampler, new FixedThresholdPolicy(0, 3)),
        );
        const out = await generator.generate(prompt, {
          maxNewTokens: NEW,
          speculative,
          parallelDrafting: speculative,
          chunk: 4,
        });
        client.close();
        assert.deepEqual(out.ids, reference, `speculative=${speculative}`);
      }
    } finally {
      await server.stop();
    }
  });
}
