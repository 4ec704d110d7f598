/** End to end through the CLI: import a tiny llama2.c model made in-test, then `hat generate` and `hat synth`. */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateText } from '../../src/apps/generate-text.ts';
import { writeLlama2cCheckpoint, writeLlama2cTokenizer } from '../helpers/llama2c-files.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const work = mkdtempSync(join(tmpdir(), 'hat-generate-'));
after(() => rmSync(work, { recursive: true, force: true }));

function hat(...args: string[]) {
  const result = spawnSync(process.execPath, [join(repoRoot, 'bin', 'hat'), ...args], { encoding: 'utf8', cwd: work });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const modelDir = join(work, 'tiny');
const vocab = writeLlama2cTokenizer(join(work, 'tok.bin'), [' ', 'a', 'b', 'c', ' a', 'ab', ' ab', 'abc']);
writeLlama2cCheckpoint(join(work, 'model.bin'), {
  dim: 16,
  hidden: 32,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  vocab,
  seqLen: 64,
  sharedClassifier: true,
});

test('hat import-llama2c writes a model folder', () => {
  const run = hat('import-llama2c', 'model.bin', 'tok.bin', '--out', modelDir);
  assert.equal(run.code, 0, run.stderr);
  for (const file of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'config.json'])
    assert.ok(existsSync(join(modelDir, file)), file);
  const again = hat('import-llama2c', 'model.bin', 'tok.bin', '--out', modelDir);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^error\[OUTPUT_EXISTS\]/);
});

test('hat generate --json prints ids, text and timings; an empty prompt starts from BOS', async () => {
  const run = hat('generate', modelDir, '--json', '--max-new-tokens', '6', '--temperature', '0.9', '--seed', '4');
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'one JSON object and nothing else on stdout');
  const out = JSON.parse(lines[0]);
  // The same seeded run in this process is the reference: the command adds only the printing.
  const reference = await generateText(modelDir, '', { maxNewTokens: 6, temperature: 0.9, topP: 1, seed: 4 });
  assert.deepEqual(out.promptIds, [1]); // llama2.c's BOS
  assert.equal(out.promptTokens, 1);
  assert.deepEqual(out.ids, reference.ids);
  assert.equal(out.text, reference.text);
  assert.equal(out.stopReason, reference.stopReason);
  assert.deepEqual(Object.keys(out), ['ids', 'promptIds', 'text', 'ttftMs', 'tbtMs', 'promptTokens', 'stopReason']);
  // Timings vary; their presence does not: tbt exists once two tokens do.
  assert.ok(out.ttftMs > 0);
  assert.equal(out.tbtMs === null, out.ids.length < 2);
});

test('hat generate streams text to stdout', async () => {
  const run = hat('generate', join(modelDir, 'model.onnx'), '--prompt', 'ab c', '--max-new-tokens', '4');
  assert.equal(run.code, 0, run.stderr);
  const greedy = { maxNewTokens: 4, temperature: 0, topP: 1, seed: 0 };
  const reference = await generateText(join(modelDir, 'model.onnx'), 'ab c', greedy);
  assert.equal(run.stdout, `${reference.text}\n`);
});

test('seeded sampling reproduces the same ids; greedy ignores the seed', async () => {
  const run = (temperature: number, seed: number) =>
    generateText(modelDir, 'abc', { maxNewTokens: 12, temperature, topP: 0.95, seed }).then((r) => r.ids);
  assert.deepEqual(await run(1, 11), await run(1, 11));
  assert.deepEqual(await run(0, 1), await run(0, 2));
});

test('hat synth writes a random model from a preset with overrides, and rejects an unknown preset', () => {
  const out = join(work, 'synth');
  const run = hat(
    'synth',
    '--config',
    'tinyllama-1.1b',
    '--layers',
    '1',
    '--hidden-size',
    '64',
    '--heads',
    '4',
    '--kv-heads',
    '2',
    '--intermediate-size',
    '96',
    '--vocab-size',
    '100',
    '--out',
    out,
    '--dtype',
    'fp16',
  );
  assert.equal(run.code, 0, run.stderr);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.equal(config.num_key_value_heads, 2);
  assert.equal(config.head_dim, 16);
  const bad = hat('synth', '--config', 'gpt-5', '--out', join(work, 'nope'));
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error\[BAD_OPTION\]: unknown --config 'gpt-5'/);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  const missing = hat('generate', join(work, 'absent'));
  assert.match(missing.stderr, /^error\[FILE_NOT_FOUND\]/);
  const noTokenizer = hat('generate', out, '--prompt', 'hello');
  assert.match(
    noTokenizer.stderr,
    /^error\[FILE_NOT_FOUND\]: this model has no tokenizer\.json, so --prompt text cannot be encoded/,
  );
  // Without a prompt it starts from the BOS id synth wrote into config.json, and prints ids.
  const fromBos = hat('generate', out, '--max-new-tokens', '3', '--json');
  assert.equal(fromBos.code, 0, fromBos.stderr);
  assert.deepEqual(JSON.parse(fromBos.stdout).promptIds, [config.bos_token_id]);
});
