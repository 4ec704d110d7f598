/** `hat inspect` on the shared fixtures (their multi-token defect must be reported) and the bundled default model. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { llamaConfig } from '../../src/models/config.ts';
import { synthModel } from '../../src/models/synth.ts';
import { silentReporter } from '../../src/reporter.ts';
import { inspectModel } from '../../src/split/inspect.ts';
import { splitModel } from '../../src/split/split.ts';
import { repoRoot, sharedFixture } from '../helpers/shared-fixtures.ts';

const gpt2 = sharedFixture('hf-tiny-gpt2-opset17', 'model.onnx');
test(
  'inspect gpt2 fixture: 2 layers, hidden 2, KV [batch, 2, past, 1], multi-token defect reported',
  { skip: gpt2.skip },
  async () => {
    const report = await inspectModel(gpt2.path);
    assert.equal(report.layers.count, 2);
    assert.deepEqual(report.hidden, { size: 2, dtype: 'float32' });
    assert.deepEqual([report.attention.heads, report.attention.kvHeads, report.attention.headDim], [2, 2, 1]);
    assert.deepEqual(report.contribOps, {});
    assert.equal(report.parameters.total, 203190);
    assert.equal(report.multiTokenStep.status, 'unsupported');
    assert.match('detail' in report.multiTokenStep ? report.multiTokenStep.detail! : '', /invalid expand shape/);
  },
);

const genai = sharedFixture('genai-tiny-llama-fp16', 'model.onnx');
test(
  'inspect genai fixture: fp16, contrib ops, external data, multi-token defect reported',
  { skip: genai.skip },
  async () => {
    const report = await inspectModel(genai.path);
    assert.equal(report.layers.count, 2);
    assert.match(report.layers.recognition, /fused Skip\*LayerNormalization/);
    assert.deepEqual(report.hidden, { size: 16, dtype: 'float16' });
    assert.equal(report.attention.heads, 1);
    assert.equal(report.contribOps['com.microsoft::SkipSimplifiedLayerNormalization'], 4);
    assert.deepEqual(report.externalData, [{ file: 'model.onnx.data', bytes: 2130080 }]);
    assert.equal(report.parameters.total, 1065040);
    assert.equal(report.multiTokenStep.status, 'unsupported');
  },
);

const defaultModel = join(repoRoot, 'fixtures', 'default', 'model.onnx');
test(
  'the bundled default model splits into a self-sufficient device folder',
  {
    skip: existsSync(defaultModel) ? false : `SKIPPED: ${defaultModel} is not there yet`,
  },
  async () => {
    const result = await splitModel(
      { model: defaultModel, out: join(mkdtempSync(join(tmpdir(), 'hat-default-')), 'split') },
      silentReporter,
    );
    assert.ok(result.verification?.passed);
    assert.ok(result.manifest.privacy.passed);
    if (existsSync(join(repoRoot, 'fixtures', 'default', 'tokenizer.json')))
      assert.equal(result.manifest.tokenizer, 'tokenizer.json');
  },
);

test('heads come from config.json where heads × head size ≠ hidden (Qwen3-like: 4 heads of 16 over 32)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-inspect-heads-'));
  try {
    const config = llamaConfig({
      vocabSize: 32,
      hiddenSize: 32,
      intermediateSize: 48,
      layers: 2,
      heads: 4,
      kvHeads: 2,
    });
    await synthModel({ ...config, headDim: 16 }, join(dir, 'model'));
    const report = await inspectModel(join(dir, 'model', 'model.onnx'), { probe: false });
    assert.deepEqual([report.attention.heads, report.attention.kvHeads, report.attention.headDim], [4, 2, 16]);
    assert.equal(report.attention.headsFrom, 'config.json num_attention_heads');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
