/**
 * Decoder families users bring (issue 11): tiny torch exports in test/fixtures/families (written by
 * scripts/families/export_families.py) and an onnxruntime-genai model-builder layout built in code. For each:
 * the export matches torch's logits (fixtures only), `hat inspect` recognises it, `hat split` verifies with default
 * options (the real CLI) and with other valid layer choices (the API), and — beyond the built-in verification's 10
 * positions — the parts reproduce the full model over 24 positions of mixed single- and multi-token steps, well
 * past Mistral's 4-position sliding window. Then traced-mask variants: the mask repair keeps a sliding window,
 * and keeps the model's own mask when it carries a bias (ALiBi) or a window it cannot observe.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentReporter, type Reporter } from '../../src/reporter.ts';
import { kvLayoutOf } from '../../src/runtime/kv-cache.ts';
import { PartRunner, type StepOutput } from '../../src/runtime/part-runner.ts';
import { createSession, type SessionOptions } from '../../src/runtime/session.ts';
import { openPart } from '../../src/runtime/split-dir.ts';
import type { SplitManifest } from '../../src/split/manifest.ts';
import { inspectModel } from '../../src/split/inspect.ts';
import { splitModel } from '../../src/split/split.ts';
import { pseudoRandomTokens } from '../../src/split/verify.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { writeGenaiDecoder } from './genai-decoder.ts';
import { writeTracedMaskVariant } from './traced-mask.ts';

const scratchDirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-families-'));
  scratchDirs.push(dir);
  return dir;
};
after(() => scratchDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

const fixture = (family: string) => join(repoRoot, 'test', 'fixtures', 'families', family, 'model.onnx');

interface Family {
  name: string;
  /** What it exercises (the README's supported-families table says the same). */
  what: string;
  model: () => string;
  heads: number;
  kvHeads: number;
  positionIds: boolean;
  torchReference: boolean;
  /** Split through the real CLI (a few families, each process costs seconds), else through the API. */
  cli?: boolean;
}

let genaiModel = '';
before(async () => {
  genaiModel = await writeGenaiDecoder(scratch());
});

const FAMILIES: Family[] = [
  {
    name: 'bloom',
    what: 'LayerNorm after the embedding, ALiBi from attention_mask, no position_ids, tied head',
    model: () => fixture('bloom'),
    heads: 4,
    kvHeads: 4,
    positionIds: false,
    torchReference: true,
  },
  {
    name: 'gemma',
    what: 'embedding × √d, sandwich norms, GeGLU, MQA, head tied as Gemm(transB)',
    model: () => fixture('gemma'),
    heads: 4,
    kvHeads: 1,
    positionIds: true,
    torchReference: true,
  },
  {
    name: 'phi',
    what: 'partial rotary, parallel attention + MLP from one LayerNorm, dense biases',
    model: () => fixture('phi'),
    heads: 4,
    kvHeads: 4,
    positionIds: true,
    torchReference: true,
  },
  {
    name: 'mistral',
    what: '4-position sliding window, GQA 4/2',
    model: () => fixture('mistral'),
    heads: 4,
    kvHeads: 2,
    positionIds: true,
    torchReference: true,
    cli: true,
  },
  {
    name: 'gpt-neox',
    what: 'parallel residual, LayerNorm with bias, partial rotary, GELU, no "layers" in node names',
    model: () => fixture('gpt-neox'),
    heads: 4,
    kvHeads: 4,
    positionIds: true,
    torchReference: true,
  },
  {
    name: 'qwen2',
    what: 'GQA 6/2, qkv bias, tied embedding, external data',
    model: () => fixture('qwen2'),
    heads: 6,
    kvHeads: 2,
    positionIds: true,
    torchReference: true,
    cli: true,
  },
  {
    name: 'genai',
    what: 'int32 ids and mask, GroupQueryAttention, SkipSimplifiedLayerNormalization, no position_ids',
    model: () => genaiModel,
    heads: 4,
    kvHeads: 2,
    positionIds: false,
    torchReference: false,
    cli: true,
  },
];

/** Layer choices beyond the default (2, 0) checked through the API: the extremes and both sides at once. */
const LAYER_CHOICES: Array<[number, number]> = [
  [0, 0],
  [1, 1],
  [3, 0],
  [0, 3],
];

function hat(...args: string[]) {
  const run = spawnSync(process.execPath, [join(repoRoot, 'bin', 'hat'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, CI: '1' },
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const STRUCTURAL: SessionOptions = { graphOptimizationLevel: 'disabled', quietRuntimeLog: true };

async function openFull(model: string): Promise<PartRunner> {
  const session = await createSession(model, STRUCTURAL, 'full model');
  return PartRunner.fromSession(session, { idsInput: 'input_ids', output: 'logits', kv: kvLayoutOf(session).pairs });
}

/**
 * 24 positions: the full model token by token, the composed parts in `steps` (multi-token steps on a non-empty
 * cache unless `singleOnly`), both with graph optimizations off. Returns the largest |Δlogit| beyond
 * atol 1e-5 + rtol 1e-5 · max|logit| (≤ 0 is a pass) and the largest error itself.
 */
async function longCheck(
  model: string,
  splitDir: string,
  singleOnly = false,
): Promise<{ excess: number; maxError: number }> {
  const manifest = JSON.parse(readFileSync(join(splitDir, 'manifest.json'), 'utf8')) as SplitManifest;
  const steps = singleOnly ? new Array(24).fill(1) : [5, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1, 1, 1, 4];
  const tokens = pseudoRandomTokens(24, manifest.model?.vocabSize ?? 2, 777);
  const full = await openFull(model);
  const parts = await Promise.all(
    (['input', 'middle', 'output'] as const).map((part) => openPart(splitDir, manifest, part, STRUCTURAL)),
  );
  let position = 0;
  let maxError = 0;
  let excess = -Infinity;
  try {
    for (const n of steps) {
      const ids = tokens.slice(position, position + n);
      const expected: StepOutput[] = [];
      for (const id of ids) expected.push(await full.step({ ids: [id] }, 1));
      const hidden = await parts[0].step({ ids }, n);
      const middle = await parts[1].step({ hidden: hidden.data }, n);
      const logits = await parts[2].step({ hidden: middle.data }, n);
      expected.forEach((row, r) => {
        let error = 0;
        let magnitude = 0;
        row.data.forEach((v, c) => {
          error = Math.max(error, Math.abs(v - logits.data[r * logits.cols + c]));
          magnitude = Math.max(magnitude, Math.abs(v));
        });
        maxError = Math.max(maxError, error);
        excess = Math.max(excess, error - (1e-5 + 1e-5 * magnitude));
      });
      position += n;
    }
  } finally {
    for (const runner of [full, ...parts]) await runner.session.release();
  }
  return { excess, maxError };
}

/** A reporter that keeps its info and warning lines. */
const listening = (said: string[]): Reporter => ({
  ...silentReporter,
  info: (m) => said.push(m),
  warn: (m) => said.push(m),
});

function readManifest(dir: string): SplitManifest {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as SplitManifest;
}

function assertVerified(manifest: SplitManifest, label: string): void {
  const v = manifest.verification!;
  assert.ok(v.passed, `${label}: ${JSON.stringify(v.cases)}`);
  assert.deepEqual(
    v.cases.map((c) => c.status),
    ['passed', 'passed', 'passed'],
    label,
  );
  assert.equal(manifest.multiTokenCachedSteps, true, label);
}

for (const family of FAMILIES) {
  if (family.torchReference) {
    test(`${family.name} (${family.what}): the export reproduces torch's logits, at once and in chunks`, async () => {
      const path = join(family.model(), '..', 'reference.json');
      const reference = JSON.parse(readFileSync(path, 'utf8')) as { ids: number[]; logits: number[][] };
      for (const chunks of [[10], [3, 1, 4, 2]]) {
        const full = await openFull(family.model());
        let position = 0;
        try {
          for (const n of chunks) {
            const out = await full.step({ ids: reference.ids.slice(position, position + n) }, n);
            for (let r = 0; r < n; r++) {
              const row = reference.logits[position + r];
              row.forEach((v, c) =>
                assert.ok(
                  Math.abs(out.data[r * out.cols + c] - v) < 1e-4,
                  `chunks ${chunks}: position ${position + r}, logit ${c}`,
                ),
              );
            }
            position += n;
          }
        } finally {
          await full.session.release();
        }
      }
    });
  }

  test(`${family.name}: inspect recognises 4 layers, the attention geometry and multi-token steps`, async () => {
    const report = await inspectModel(family.model());
    assert.equal(report.layers.count, 4);
    assert.equal(report.attention.heads, family.heads);
    assert.equal(report.attention.kvHeads, family.kvHeads);
    assert.equal(report.multiTokenStep.status, 'passed', JSON.stringify(report.multiTokenStep));
    if (family.name === 'qwen2')
      assert.deepEqual(
        report.externalData.map((d) => d.file),
        ['model.onnx.data'],
      );
    if (family.name === 'genai') assert.equal(report.contribOps['com.microsoft::GroupQueryAttention'], 4);
  });

  test(`${family.name}: default split verifies; the parts reproduce the model over 24 positions`, async () => {
    const out = join(scratch(), 'split');
    const said: string[] = [];
    if (family.cli) {
      const run = hat('split', family.model(), '--out', out);
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /multi-token cached steps: yes/);
      said.push(run.stdout, run.stderr);
    } else {
      await splitModel({ model: family.model(), out }, listening(said));
    }
    // Torch exports of grouped-query attention widen the cache with repeat_kv: the split reads it as it is.
    const grouped = family.kvHeads < family.heads && family.name !== 'genai' ? 8 : 0;
    const groupedLine = said.join('\n').match(/grouped-query attention: (\d+) attention MatMuls/);
    assert.equal(Number(groupedLine?.[1] ?? 0), grouped, said.join('\n'));
    const manifest = readManifest(out);
    assertVerified(manifest, 'default split');
    const { input, middle, output } = manifest.parts;
    assert.deepEqual(
      [input.layers, middle.layers, output.layers],
      [
        [0, 2],
        [2, 4],
        [4, 4],
      ],
    );
    const preludeInputs = manifest.prelude.inputs as Record<string, string[]>;
    assert.equal(preludeInputs.middle.includes('position_ids'), family.positionIds);
    assert.ok(manifest.privacy.passed);
    const long = await longCheck(family.model(), out);
    assert.ok(long.excess <= 0, `max |Δlogit| ${long.maxError}`);
  });

  const choices = LAYER_CHOICES.map((c) => c.join('/')).join(', ');
  test(`${family.name}: other layer choices verify too (--input-layers/--output-layers ${choices})`, async () => {
    for (const [inputLayers, outputLayers] of LAYER_CHOICES) {
      const label = `K=${inputLayers} J=${outputLayers}`;
      const options = { model: family.model(), out: join(scratch(), 'split'), inputLayers, outputLayers };
      const result = await splitModel(options, silentReporter);
      assertVerified(result.manifest, label);
      assert.deepEqual(result.manifest.parts.middle.layers, [inputLayers, 4 - outputLayers], label);
      const long = await longCheck(family.model(), result.dir);
      assert.ok(long.excess <= 0, `${label}: max |Δlogit| ${long.maxError}`);
    }
  });
}

test('qwen2 (external data) with --weights reference: the parts read the hard-linked source data', async () => {
  const dir = scratch();
  for (const file of ['model.onnx', 'model.onnx.data', 'config.json']) {
    copyFileSync(join(fixture('qwen2'), '..', file), join(dir, file)); // hard links need one filesystem
  }
  const model = join(dir, 'model.onnx');
  const result = await splitModel({ model, out: join(dir, 'split'), weights: 'reference' }, silentReporter);
  assertVerified(result.manifest, 'reference weights');
  assert.ok(existsSync(join(dir, 'split', 'source-data', 'model.onnx.data')));
  const long = await longCheck(model, result.dir);
  assert.ok(long.excess <= 0, `max |Δlogit| ${long.maxError}`);
});

test('mistral, traced mask failing multi-token steps: the mask is rebuilt with its 4-position window', async () => {
  const model = await writeTracedMaskVariant(fixture('mistral'), scratch());
  const said: string[] = [];
  const { dir: out, manifest } = await splitModel({ model, out: join(scratch(), 'split') }, listening(said));
  assert.match(said.join('\n'), /rebuilding its attention mask \/Where_output_0 with its 4-position sliding window/);
  assertVerified(manifest, 'repaired');
  assert.match(String(manifest.prelude.maskRepair), /4-position sliding window/);
  const long = await longCheck(model, out);
  assert.ok(long.excess <= 0, `max |Δlogit| ${long.maxError}`);
});

test('a 12-position window (longer than verification) is rebuilt too: no split wrong past position 12', async () => {
  const options = { window: 12, config: { sliding_window: 12 } };
  const model = await writeTracedMaskVariant(fixture('mistral'), scratch(), options);
  const result = await splitModel({ model, out: join(scratch(), 'split') }, silentReporter);
  assertVerified(result.manifest, 'repaired');
  assert.match(String(result.manifest.prelude.maskRepair), /12-position sliding window/);
  // A causal mask without the window passes the 10-position verification, but not this.
  const long = await longCheck(model, result.dir);
  assert.ok(long.excess <= 0, `max |Δlogit| ${long.maxError}`);
});

test("bloom with a traced mask: ALiBi lives in the mask tensor, so the model's own mask is kept", async () => {
  const model = await writeTracedMaskVariant(fixture('bloom'), scratch());
  const said: string[] = [];
  const { dir: out, manifest } = await splitModel({ model, out: join(scratch(), 'split') }, listening(said));
  assert.match(
    said.join('\n'),
    /its attention mask is kept: the mask \/Add_output_0 cannot be rebuilt: it holds .*: a bias, not only a mask/,
  );
  assert.deepEqual(
    manifest.verification!.cases.map((c) => c.status),
    ['passed', 'passed', 'unsupported'],
  );
  assert.equal(manifest.multiTokenCachedSteps, false);
  assert.match(String(manifest.prelude.maskRepair), /^none/);
  const long = await longCheck(model, out, true);
  assert.ok(long.excess <= 0, `max |Δlogit| ${long.maxError}`);
});

test('a traced mask whose config.json declares a window longer than the probe sees is kept', async () => {
  const model = await writeTracedMaskVariant(fixture('phi'), scratch(), { config: { sliding_window: 32768 } });
  const said: string[] = [];
  const result = await splitModel({ model, out: join(scratch(), 'split') }, listening(said));
  assert.match(
    said.join('\n'),
    /its attention mask is kept: config\.json declares a sliding window of 32768 positions, longer than the 8193/,
  );
  assert.equal(result.manifest.multiTokenCachedSteps, false);
  assert.match(String(result.manifest.prelude.maskRepair), /^none/);
  const plain = await writeTracedMaskVariant(fixture('phi'), scratch());
  const repaired = await splitModel({ model: plain, out: join(scratch(), 'split') }, silentReporter);
  assertVerified(repaired.manifest, 'phi, no declared window');
});
