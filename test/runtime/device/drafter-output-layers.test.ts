/**
 * With decoder layers in the output part (J > 0), each draft is the small model's own choice: the drafts run
 * those layers on a copy of the verified cache that grows with the chain (every draft after the first used to run
 * at the first one's position, without the drafts before it in the cache). Branches of parallel drafting too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLlamaOnnx } from '../../../src/models/llama-onnx.ts';
import { randomWeights } from '../../../src/models/weights.ts';
import { silentReporter } from '../../../src/reporter.ts';
import { DeviceCaches } from '../../../src/runtime/device/device-caches.ts';
import { openDeviceParts, type DeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { HatGenerator } from '../../../src/runtime/device/hat-generator.ts';
import { Predrafter } from '../../../src/runtime/device/predrafter.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { lastRow } from '../../../src/runtime/part-runner.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import { manifestHash, readManifest } from '../../../src/runtime/split-dir.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { splitModel } from '../../../src/split/split.ts';
import { SMALL_LLAMA, addIdentityAdapter, serveSplit } from '../../helpers/runtime-fixtures.ts';

const greedy = createSampler({ temperature: 0, topP: 1, seed: 0 });

/** The small model (input part → identity adapter → output part) run on `ids` from scratch: its greedy next token. */
async function slmNext(reference: DeviceParts, ids: number[]): Promise<number> {
  for (const part of [reference.input, reference.output]) part.truncate(0);
  const h = await reference.input.step({ ids }, ids.length);
  return argmax(lastRow(await reference.output.step({ hidden: h.data }, ids.length)));
}

const dir = mkdtempSync(join(tmpdir(), 'hat-drafter-j-'));
const split = join(dir, 'split');
before(async () => {
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 3, std: 0.3 }), join(dir, 'model.onnx'));
  await splitModel({ model: join(dir, 'model.onnx'), out: split, inputLayers: 1, outputLayers: 2 }, silentReporter);
  addIdentityAdapter(split);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('J > 0: every draft, and every draft of a parallel branch, is the small model’s own greedy choice', async () => {
  {
    const manifest = readManifest(split);
    const parts = await openDeviceParts(split, manifest, { threads: 1, withAdapter: true });
    const reference = await openDeviceParts(split, manifest, { threads: 1, withAdapter: true });
    const prompts = [
      [3, 17, 42, 8, 29],
      [11, 5, 60, 23, 7, 38, 2],
      [50, 9, 31, 14],
    ];
    let checked = 0;
    for (const prompt of prompts) {
      const caches = new DeviceCaches(parts, true);
      caches.clear();
      // The verified caches hold the prompt but its last token; with an identity adapter the small model's view
      // of the output layers is the input part's hidden states, so that is what the verified cache gets here.
      const h = await parts.input.step({ ids: prompt.slice(0, -1) }, prompt.length - 1);
      await parts.adapter!.step({ hidden: h.data }, prompt.length - 1);
      await parts.output.step({ hidden: h.data }, prompt.length - 1);
      const drafter = new Drafter(parts, greedy, new FixedThresholdPolicy(0, 4));
      caches.startDrafting();
      const chain = await drafter.start(prompt[prompt.length - 1]);
      while (await drafter.extend(chain, 4)) {
        /* draft */
      }
      assert.equal(chain.drafts.length, 4);
      for (let k = 0; k < chain.drafts.length; k++, checked++)
        assert.equal(chain.drafts[k], await slmNext(reference, [...prompt, ...chain.drafts.slice(0, k)]), `draft ${k}`);
      assert.equal(chain.nextGuess?.token, await slmNext(reference, [...prompt, ...chain.drafts]));

      // A branch from the second likeliest candidate after the chain, drafted while a verification is "in flight".
      const candidate = chain.nextCandidates![1];
      const [branch] = await new Predrafter(drafter).run([candidate], new Promise(() => {}), caches);
      const before = [...prompt, ...chain.drafts, candidate];
      for (let k = 0; k < branch.chain.drafts.length; k++, checked++)
        assert.equal(branch.chain.drafts[k], await slmNext(reference, [...before, ...branch.chain.drafts.slice(0, k)]));
    }
    assert.ok(checked >= 20, `${checked} drafts checked`);
  }
});

test('J > 0: HAT with parallel drafting (three branches) over a real server equals the full model', async () => {
  const reference = await OnnxCausalLm.open(join(dir, 'model.onnx'));
  const prompt = [1, 5, 9, 22, 13, 40, 2, 7];
  const expected = (await generateTokens(reference, prompt, { maxNewTokens: 24, sampler: argmax })).ids;
  await reference.release();
  const { server, port } = await serveSplit(split, { maxSessions: 4 });
  try {
    const manifest = readManifest(split);
    const parts = await openDeviceParts(split, manifest, { threads: 1, withAdapter: true });
    const client = await CloudClient.connect({
      url: `ws://127.0.0.1:${port}`,
      manifestHash: manifestHash(manifest),
      hiddenSize: manifest.hidden.size,
      wire: 'fp32',
    });
    try {
      // One draft a round: rounds that keep every draft (where a branch can be confirmed) come often.
      const drafter = new Drafter(parts, greedy, new FixedThresholdPolicy(0, 1));
      const out = await new HatGenerator(parts, client, greedy, drafter).generate(prompt, {
        maxNewTokens: 24,
        speculative: true,
        parallelDrafting: true,
        parallelBranches: 3,
        predraftAlways: true,
        chunk: 'off',
      });
      assert.equal(out.error, undefined);
      assert.deepEqual(out.ids, expected);
      assert.ok(out.metrics.rounds < 23, `drafts were accepted: ${out.metrics.rounds} rounds for 24 tokens`);
      assert.ok(out.metrics.parallelDrafting.hits > 0, 'a branch was confirmed and continued');
    } finally {
      client.close();
    }
  } finally {
    await server.stop();
  }
});
