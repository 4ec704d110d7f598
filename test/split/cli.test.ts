/**
 * The real CLI (`node bin/hat ...`) on good and bad input. Every bad input gets one error line naming the
 * problem, a non-zero exit, and no output directory (not even a staging leftover beside it).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadModel, onnx, saveModel } from '../../src/onnx/model-io.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { buildTinyDecoder, writeTinyDecoder } from './tiny-decoders.ts';

const scratchDirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-split-cli-'));
  scratchDirs.push(dir);
  return dir;
};
after(() => scratchDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function hat(...args: string[]) {
  const run = spawnSync(process.execPath, [join(repoRoot, 'bin', 'hat'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, CI: '1' },
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

function assertOneErrorLine(args: string[], code: string, pattern: RegExp): void {
  const run = hat(...args);
  assert.notEqual(run.status, 0);
  // Progress lines may precede it; the error itself is exactly one line, the last one.
  const lines = run.stderr.trim().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('error')).length, 1, `one error line, got:\n${run.stderr}`);
  assert.match(lines[lines.length - 1], new RegExp(`^error\\[${code}\\]: `));
  assert.match(lines[lines.length - 1], pattern);
}

function assertRejected(args: string[], out: string, code: string, pattern: RegExp): void {
  assertOneErrorLine(args, code, pattern);
  assert.ok(!existsSync(out), `${out} must not exist`);
  if (existsSync(dirname(out)) && statSync(dirname(out)).isDirectory())
    assert.deepEqual(
      readdirSync(dirname(out)).filter((f) => f.includes('hat-partial')),
      [],
    );
}

const F = onnx.TensorProto.DataType.FLOAT;
const info = (name: string, elemType = F) => ({
  name,
  type: { tensorType: { elemType, shape: { dim: [{ dimParam: 'n' }] } } },
});

test('hat split rejects a model without a KV cache', async () => {
  const dir = scratch();
  await saveModel(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ version: 17 }],
      graph: {
        name: 'mlp',
        node: [{ opType: 'Relu', input: ['x'], output: ['y'] }],
        input: [info('x')],
        output: [info('y')],
      },
    }),
    join(dir, 'mlp.onnx'),
  );
  assertRejected(
    ['split', join(dir, 'mlp.onnx'), '--out', join(dir, 'out')],
    join(dir, 'out'),
    'NOT_A_DECODER',
    /past_key_values/,
  );
});

test('hat split rejects a merged decoder whose If node switches the cache branch', async () => {
  const dir = scratch();
  const branch = (name: string) => ({
    name,
    node: ['logits', 'present.0.key', 'present.0.value'].map((o, i) => ({
      opType: 'Identity',
      input: [i ? 'past_key_values.0.key' : 'input_ids'],
      output: [`${name}_${i}`],
    })),
    output: [0, 1, 2].map((i) => info(`${name}_${i}`)),
  });
  await saveModel(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ version: 17 }],
      graph: {
        name: 'merged',
        node: [
          {
            opType: 'If',
            input: ['use_cache_branch'],
            output: ['logits', 'present.0.key', 'present.0.value'],
            attribute: [
              { name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('with_past') },
              { name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('without_past') },
            ],
          },
        ],
        input: [
          info('input_ids', onnx.TensorProto.DataType.INT64),
          info('use_cache_branch', onnx.TensorProto.DataType.BOOL),
          info('past_key_values.0.key'),
          info('past_key_values.0.value'),
        ],
        output: [info('logits'), info('present.0.key'), info('present.0.value')],
      },
    }),
    join(dir, 'merged.onnx'),
  );
  assertRejected(
    ['split', join(dir, 'merged.onnx'), '--out', join(dir, 'out')],
    join(dir, 'out'),
    'UNSUPPORTED_MODEL',
    /merged decoder/,
  );
});

test('hat split rejects a truncated model file', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'));
  truncateSync(model, Math.floor(readFileSync(model).length / 2));
  assertRejected(['split', model, '--out', join(dir, 'out')], join(dir, 'out'), 'BAD_MODEL', /not a valid ONNX model/);
});

test('hat split rejects a model whose external-data file is missing', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'), {}, 'external');
  rmSync(`${model}.data`);
  assertRejected(
    ['split', model, '--out', join(dir, 'out')],
    join(dir, 'out'),
    'MISSING_EXTERNAL_DATA',
    /model\.onnx\.data .*missing/,
  );
});

test('hat split rejects layer counts that leave the middle empty, and bad options', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'));
  assertRejected(
    ['split', model, '--out', join(dir, 'out'), '--input-layers', '3', '--output-layers', '1'],
    join(dir, 'out'),
    'BAD_SPLIT',
    /leaves no layer for the middle part \(the model has 4 layers\)/,
  );
  assertRejected(
    ['split', model, '--out', join(dir, 'out'), '--weights', 'move'],
    join(dir, 'out'),
    'BAD_OPTION',
    /--weights/,
  );
});

test('hat split rejects an unwritable --out and cleans up when writing fails midway', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'), {}, 'external');
  writeFileSync(join(dir, 'a-file'), 'x');
  assertRejected(
    ['split', model, '--out', join(dir, 'a-file', 'out')],
    join(dir, 'a-file', 'out'),
    'OUTPUT_EXISTS',
    /not writable|does not exist/,
  );
  // --weights reference hard-links the data; across filesystems that fails after the staging folder exists.
  if (existsSync('/dev/shm')) {
    const out = join(mkdtempSync('/dev/shm/hat-split-cli-'), 'out');
    assertRejected(['split', model, '--out', out, '--weights', 'reference'], out, 'OUTPUT_EXISTS', /hard-link/);
    rmSync(dirname(out), { recursive: true });
  }
});

test('hat split names a malformed config.json beside the model (it crashed as INTERNAL)', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'));
  writeFileSync(join(dir, 'config.json'), '{"vocab_size": 50,');
  const out = join(dir, 'split');
  assertRejected(['split', model, '--out', out], out, 'BAD_CHECKPOINT', /config\.json is not valid JSON/);
});

test('hat split --force never replaces a folder that holds the model it reads', async () => {
  const dir = scratch();
  mkdirSync(join(dir, 'model'));
  const model = await writeTinyDecoder(join(dir, 'model', 'model.onnx'), {}, 'external');
  for (const out of [join(dir, 'model'), dir]) {
    assertOneErrorLine(['split', model, '--out', out, '--force'], 'OUTPUT_EXISTS', /holds .*model\.onnx/);
    assert.ok(existsSync(model), `--out ${out} --force deleted the model`);
  }
});

test('hat split --force replaces an earlier split: the old one goes aside and is deleted after', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'));
  const out = join(dir, 'split');
  assert.equal(hat('split', model, '--out', out).status, 0);
  writeFileSync(join(out, 'stale.txt'), 'from before');
  const run = hat('split', model, '--out', out, '--force');
  assert.equal(run.status, 0, run.stderr);
  assert.ok(existsSync(join(out, 'manifest.json')));
  assert.ok(!existsSync(join(out, 'stale.txt')));
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith('.')),
    [],
    'nothing left beside it',
  );
});

test('hat split writes the parts and hat inspect reports the model', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'), { residual: 'fused-skip' });
  writeFileSync(join(dir, 'tokenizer.json'), '{"model": {}}');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ vocab_size: 50, bos_token_id: 1, eos_token_id: [2, 3] }));
  const run = hat('split', model, '--out', join(dir, 'split'));
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /privacy: passed; multi-token cached steps: yes/);
  assert.deepEqual(readdirSync(join(dir, 'split')).sort(), [
    'config.json',
    'input.onnx',
    'input.onnx.data',
    'manifest.json',
    'middle.onnx',
    'middle.onnx.data',
    'output.onnx',
    'output.onnx.data',
    'tokenizer.json',
  ]);
  const manifest = JSON.parse(readFileSync(join(dir, 'split', 'manifest.json'), 'utf8'));
  assert.equal(manifest.tokenizer, 'tokenizer.json');
  assert.deepEqual(manifest.model, { vocabSize: 50, bosTokenId: 1, eosTokenId: 2 });
  assert.equal(manifest.multiTokenCachedSteps, true);

  // An existing split is never overwritten without --force.
  assertOneErrorLine(['split', model, '--out', join(dir, 'split')], 'OUTPUT_EXISTS', /not empty/);
  assert.ok(existsSync(join(dir, 'split', 'manifest.json')));

  const inspect = hat('inspect', model, '--json');
  assert.equal(inspect.status, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout);
  assert.equal(report.layers.count, 4);
  assert.equal(report.hidden.size, 16);
  assert.equal(report.attention.kvHeads, 2);
  assert.deepEqual(report.contribOps, { 'com.microsoft::SkipSimplifiedLayerNormalization': 8 });
  assert.equal(report.multiTokenStep.status, 'passed');
});

test('hat split and hat generate take a decoder whose logits output has another name (lm_logits)', async () => {
  const dir = scratch();
  const model = buildTinyDecoder({});
  const graph = model.graph!;
  const logits = graph.output!.find((o) => !o.name!.startsWith('present'))!;
  for (const node of graph.node ?? []) node.output = node.output!.map((n) => (n === logits.name ? 'lm_logits' : n));
  logits.name = 'lm_logits';
  const path = join(dir, 'model.onnx');
  await saveModel(model, path);
  const split = hat('split', path, '--out', join(dir, 'split'));
  assert.equal(split.status, 0, split.stderr);
  const generate = hat('generate', path, '--prompt-ids', '1,2,3', '--max-new-tokens', '4', '--json');
  assert.equal(generate.status, 0, generate.stderr);
  // The split verified its parts against the model (which runs the output part's `logits`); it names them so.
  const output = await loadModel(join(dir, 'split', 'output.onnx'));
  assert.ok(output.model.graph!.output!.some((o) => o.name === 'logits'));
});

test('hat split interrupted (Ctrl-C) leaves no staging folder behind', async () => {
  const dir = scratch();
  const model = await writeTinyDecoder(join(dir, 'model.onnx'));
  const out = join(dir, 'split');
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'hat'), 'split', model, '--out', out], {
    cwd: repoRoot,
    env: { ...process.env, CI: '1' },
    stdio: 'ignore',
  });
  const exited = once(child, 'exit');
  const staging = () => readdirSync(dir).filter((f) => f.includes('hat-partial'));
  const deadline = Date.now() + 30_000;
  while (staging().length === 0 && child.exitCode === null && Date.now() < deadline) await delay(2);
  assert.equal(staging().length, 1, 'the split was interrupted while staging');
  child.kill('SIGINT');
  const [code, signal] = await exited;
  assert.equal(signal, 'SIGINT', `ended by the interrupt (exit code ${code})`);
  assert.deepEqual(staging(), []);
  assert.ok(!existsSync(out));
});
