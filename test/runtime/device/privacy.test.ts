import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter } from '../../../src/runtime/device/drafter.ts';
import { FixedThresholdPolicy } from '../../../src/runtime/speculative/draft-policy.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { decodeFrame, decodeJson } from '../../../src/runtime/protocol/frame.ts';
import { wireBytesPerRow } from '../../../src/runtime/protocol/hidden-codec.ts';
import { addIdentityAdapter, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { repoRoot } from '../../helpers/shared-fixtures.ts';
import { runDevice } from '../../../src/runtime/device/run-device.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

function encodeIds(ids: readonly number[], bytes: 4 | 8): Buffer {
  const out = Buffer.alloc(ids.length * bytes);
  ids.forEach((id, i) => (bytes === 4 ? out.writeInt32LE(id, i * 4) : out.writeBigInt64LE(BigInt(id), i * 8)));
  return out;
}

test('the device uplink carries only hidden states and control integers, never the token ids', async () => {
  const { split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const { server, port } = await serveSplit(split, { maxTokensPerFrame: 512, maxContext: 512 });
  const manifest = readManifest(split);
  const frames: Uint8Array[] = [];
  const prompt = [41, 7, 33, 12, 59, 3, 27, 50, 18, 44];
  try {
    const parts = await openDeviceParts(split, manifest, { withAdapter: true });
    const client = await CloudClient.connect({
      url: `ws://127.0.0.1:${port}`,
      manifestHash: manifestHash(manifest),
      hiddenSize: manifest.hidden.size,
      wire: 'fp32',
      recordUplink: (bytes) => frames.push(bytes.slice()),
    });
    const sampler = createSampler({ temperature: 0, topP: 1, seed: 0 });
    const generator = new HatGenerator(
      parts,
      client,
      sampler,
      new Drafter(parts, sampler, new FixedThresholdPolicy(0, 3)),
    );
    const out = await generator.generate(prompt, {
      maxNewTokens: 16,
      speculative: true,
      parallelDrafting: true,
      chunk: 4,
    });
    client.close();

    const uplink = Buffer.concat(frames);
    // Something was captured: at least the prompt's hidden rows (the checks below pass trivially on nothing).
    const rowBytes = wireBytesPerRow('fp32', manifest.hidden.size);
    assert.ok(uplink.length > prompt.length * rowBytes, `${uplink.length} bytes captured`);
    // Any window of three consecutive prompt or generated ids, as int32 or int64, would be a leak.
    const sequence = [...prompt, ...out.ids];
    for (let i = 0; i + 3 <= sequence.length; i++) {
      for (const width of [4, 8] as const) {
        assert.equal(
          uplink.indexOf(encodeIds(sequence.slice(i, i + 3), width)),
          -1,
          `ids ${sequence.slice(i, i + 3)} found as int${width * 8}`,
        );
      }
    }
    // Structurally: a hello with only the split hash, a client name and protocol features, then forward frames whose
    // payload is exactly hidden rows.
    const decoded = frames.map((f) => decodeFrame(f, { maxPayloadBytes: 1 << 30 }));
    assert.equal(decoded[0].header.type, 'hello');
    const hello = decodeJson(decoded[0].payload) as { features: unknown };
    assert.deepEqual(Object.keys(hello).sort(), ['client', 'features', 'manifestHash']);
    assert.deepEqual(hello.features, ['rows-advice']);
    for (const frame of decoded.slice(1)) {
      assert.ok(frame.header.type === 'forward' || frame.header.type === 'bye');
      if (frame.header.type === 'forward') {
        assert.equal(frame.header.hiddenSize, manifest.hidden.size);
        assert.equal(frame.payload.length, frame.header.nTokens * rowBytes);
      }
    }
    // Every frame went through the recorder: one per prompt chunk and one per round, between the hello and the bye.
    const { chunkSizes, rounds } = out.metrics;
    assert.deepEqual(chunkSizes, [4, 4, 2]);
    assert.equal(decoded.filter((f) => f.header.type === 'forward').length, chunkSizes.length + rounds);
    assert.equal(decoded.length, 1 + chunkSizes.length + rounds + 1);
    assert.equal(decoded.at(-1)!.header.type, 'bye');
    // The cloud's welcome lists 'prompt-rows', so each prompt chunk says the rows its prompt has left (a length the
    // cloud learns from the chunks anyway, only sooner); verifications say nothing.
    const said = decoded.filter((f) => f.header.type === 'forward').map((f) => f.header.promptRows);
    assert.deepEqual(said, [10, 6, 2, ...Array(rounds).fill(0)]);
  } finally {
    await server.stop();
  }
});

const defaultSplit = join(repoRoot, 'fixtures', 'default-split');
test(
  'on the default model, the uplink holds neither the prompt text nor its token ids',
  { skip: existsSync(join(defaultSplit, 'manifest.json')) ? false : 'SKIPPED: fixtures/default-split is missing' },
  async () => {
    const { server, port } = await serveSplit(defaultSplit, { maxTokensPerFrame: 512, maxContext: 512 });
    const frames: Uint8Array[] = [];
    const prompt = 'In the beginning God created the heaven and the earth. And the earth was without form, and void';
    try {
      const result = await runDevice({
        splitDir: defaultSplit,
        cloud: `ws://127.0.0.1:${port}`,
        prompt,
        maxNewTokens: 24,
        temperature: 0,
        topP: 1,
        seed: 0,
        draftThreshold: 'auto',
        maxDraft: 6,
        speculative: true,
        parallelDrafting: true,
        parallelBranches: 2,
        chunk: 8,
        wire: 'fp16',
        fallbackLocal: false,
        recordUplink: (bytes) => frames.push(bytes.slice()),
      });
      const uplink = Buffer.concat(frames);
      // Something was captured: the hello, then a frame per prompt chunk and per round, each with hidden rows.
      const forwards = frames
        .map((f) => decodeFrame(f, { maxPayloadBytes: 1 << 30 }))
        .filter((f) => f.header.type === 'forward');
      assert.equal(forwards.length, result.metrics.chunkSizes.length + result.metrics.rounds);
      const rowBytes = wireBytesPerRow('fp16', readManifest(defaultSplit).hidden.size);
      assert.ok(uplink.length > result.promptIds.length * rowBytes, `${uplink.length} bytes captured`);
      for (const text of [prompt, 'beginning', 'heaven', result.text!.trim().slice(0, 12)]) {
        for (const encoding of ['utf8', 'utf16le'] as const)
          assert.equal(uplink.indexOf(Buffer.from(text, encoding)), -1, `"${text}" found as ${encoding}`);
      }
      const sequence = [...result.promptIds, ...result.ids];
      for (let i = 0; i + 3 <= sequence.length; i++) {
        for (const width of [4, 8] as const)
          assert.equal(uplink.indexOf(encodeIds(sequence.slice(i, i + 3), width)), -1);
      }
    } finally {
      await server.stop();
    }
  },
);
