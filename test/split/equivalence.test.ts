/**
 * Composed parts = full model: logits and every present.* for a prefill on an empty cache, single-token decode
 * steps, and a multi-token step on a non-empty cache (compared with token-by-token steps) wherever the parts
 * can run one. Tolerance 1e-5 fp32, 2e-3 fp16 (src/split/verify.ts). Covers the two shared ONNX fixtures (skipped
 * visibly without ../shared) and decoders the tests build themselves.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentReporter } from '../../src/reporter.ts';
import type { SplitManifest } from '../../src/split/manifest.ts';
import { splitModel, type SplitOptions } from '../../src/split/split.ts';
import { verifySplit, type VerifyReport } from '../../src/split/verify.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';
import { writeTinyDecoder, type TinyDecoderConfig } from './tiny-decoders.ts';

const scratchDirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-split-eq-'));
  scratchDirs.push(dir);
  return dir;
};
after(() => scratchDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function assertEquivalent(report: VerifyReport | undefined, expectMultiToken: boolean): void {
  assert.ok(report, 'split ran its verification');
  const [prefill, decode, multi] = report.cases;
  for (const c of [prefill, decode]) {
    assert.equal(c.status, 'passed', `${c.name}: max abs error ${c.maxAbsError} at ${c.worst}`);
  }
  assert.equal(
    multi.status,
    expectMultiToken ? 'passed' : 'unsupported',
    `${multi.name}: ${multi.detail ?? multi.maxAbsError}`,
  );
}

async function split(model: string, options: Partial<SplitOptions> = {}) {
  return splitModel({ model, out: join(scratch(), 'split'), ...options }, silentReporter);
}

const gpt2 = sharedFixture('hf-tiny-gpt2-opset17', 'model.onnx');
test(
  'gpt2 fixture (standard ops, inline fp32): parts reproduce the model; ' +
    'its broken multi-token mask is reported, then repaired',
  { skip: gpt2.skip },
  async () => {
    const kept = await split(gpt2.path, { repairMask: false });
    assertEquivalent(kept.verification, false);
    assert.equal(kept.manifest.multiTokenCachedSteps, false);
    assert.match(kept.manifest.verification!.cases[2].detail!, /invalid expand shape/);

    // Default: the traced mask is rebuilt in the parts, proven against the full model run token by token.
    const result = await split(gpt2.path);
    assertEquivalent(result.verification, true);
    const m = result.manifest;
    assert.equal(m.multiTokenCachedSteps, true);
    assert.match(String(m.prelude.maskRepair), /Where_4_output_0 is rebuilt/);
    assert.deepEqual(
      [m.parts.input.layers, m.parts.middle.layers, m.parts.output.layers],
      [
        [0, 1],
        [1, 2],
        [2, 2],
      ],
    );
    assert.equal(m.hidden.dtype, 'float32');
    assert.ok(m.privacy.passed);
    // The mask prelude is duplicated: the middle part needs attention_mask (past + seq long, fed by PartRunner).
    assert.ok(m.parts.middle.inputs.some((i) => i.name === 'attention_mask'));
    assert.deepEqual(
      m.kv.middle.map((p) => p.pastKey),
      ['past_key_values.1.key'],
    );
  },
);

const genai = sharedFixture('genai-tiny-llama-fp16', 'model.onnx');
test(
  'genai fixture (contrib ops, fused residual norms, external fp16): parts reproduce the model in both weight modes',
  { skip: genai.skip },
  async () => {
    const copied = await split(genai.path);
    assertEquivalent(copied.verification, true); // with the traced mask repaired
    assert.match(String(copied.manifest.prelude.maskRepair), /attn_mask_reformat\/Tile\/output_0 is rebuilt/);
    assert.equal(copied.manifest.hidden.dtype, 'float16');
    // Both cuts sit inside SkipSimplifiedLayerNormalization nodes: the wire is the residual sum, same name on both
    // sides.
    const { inputToMiddle, middleToOutput } = copied.manifest.boundaries;
    assert.equal(inputToMiddle, '/model/layers.1/input_layernorm/output_3');
    assert.equal(copied.manifest.parts.input.outputs[0].name, inputToMiddle);
    assert.equal(copied.manifest.parts.middle.inputs[0].name, inputToMiddle);
    assert.equal(copied.manifest.parts.middle.outputs[0].name, middleToOutput);
    assert.equal(copied.manifest.parts.output.inputs[0].name, middleToOutput);
    for (const part of ['input', 'middle', 'output'] as const) {
      assert.deepEqual(copied.manifest.parts[part].dataFiles, [`${part}.onnx.data`]);
    }

    // --weights reference: no copy; the source data is hard-linked (a private copy of the fixture, not ../shared
    // itself).
    const source = scratch();
    copyFileSync(genai.path, join(source, 'model.onnx'));
    copyFileSync(`${genai.path}.data`, join(source, 'model.onnx.data'));
    const referenced = await split(join(source, 'model.onnx'), { weights: 'reference', repairMask: false });
    assertEquivalent(referenced.verification, false);
    assert.match(referenced.manifest.verification!.cases[2].detail!, /invalid expand shape/);
    assert.deepEqual(referenced.manifest.parts.middle.dataFiles, ['source-data/model.onnx.data']);
    assert.equal(
      statSync(join(referenced.dir, 'source-data', 'model.onnx.data')).ino,
      statSync(join(source, 'model.onnx.data')).ino,
    );
    assert.ok(!existsSync(join(referenced.dir, 'middle.onnx.data')));
  },
);

const tinyCases: Array<[string, Partial<TinyDecoderConfig>, Partial<SplitOptions>]> = [
  ['plain residual adds, GQA, K=2 J=0 (defaults)', {}, {}],
  [
    'fused Skip residual norms, cut inside them on both sides, K=1 J=1',
    { residual: 'fused-skip' },
    { inputLayers: 1, outputLayers: 1 },
  ],
  ['fused Skip residual norms, default cuts (the final norm is fused too)', { residual: 'fused-skip', layers: 3 }, {}],
  [
    'graph without node names, tied embeddings, embedding-only input part (K=0, J=2)',
    { named: false, tiedEmbeddings: true },
    { inputLayers: 0, outputLayers: 2 },
  ],
  [
    'multi-head (no GQA), two layers, --weights reference on inline weights',
    { kvHeads: 4, layers: 2 },
    { weights: 'reference' },
  ],
];

for (const [name, config, options] of tinyCases) {
  test(`built-in decoder: ${name}`, async () => {
    const dir = scratch();
    const model = await writeTinyDecoder(join(dir, 'model.onnx'), config);
    const result = await split(model, options);
    assertEquivalent(result.verification, true);
    assert.equal(result.manifest.multiTokenCachedSteps, true);
    assert.ok(result.manifest.privacy.passed);
    const written: SplitManifest = JSON.parse(readFileSync(join(result.dir, 'manifest.json'), 'utf8'));
    assert.equal(written.format, 'hat-split/1');
    assert.equal(written.verification?.passed, true);
  });
}

test('the verifier notices parts that do not match the model', async () => {
  const dir = scratch();
  const result = await split(await writeTinyDecoder(join(dir, 'a.onnx'), { seed: 1 }));
  const other = await writeTinyDecoder(join(dir, 'b.onnx'), { seed: 2 });
  const report = await verifySplit(other, result.dir, result.manifest);
  assert.equal(report.passed, false);
  assert.equal(report.cases[0].status, 'failed');
});
