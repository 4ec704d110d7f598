/**
 * `hat synth` and `hat import-llama2c` write their model folder all or nothing: into a hidden staging folder
 * that replaces --out only once complete. Before, they wrote file by file into --out, so a forced run left stale
 * files and a failed one broke the model that was there; path mistakes surfaced as INTERNAL.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError } from '../../src/errors.ts';
import { llamaConfig } from '../../src/models/config.ts';
import { importLlama2c } from '../../src/models/import-llama2c.ts';
import { synthModel } from '../../src/models/synth.ts';
import type { Reporter } from '../../src/reporter.ts';
import { writeLlama2cCheckpoint, writeLlama2cTokenizer } from '../helpers/llama2c-files.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const work = mkdtempSync(join(tmpdir(), 'hat-model-dir-'));
after(() => rmSync(work, { recursive: true, force: true }));

const tiny = (vocabSize: number) =>
  llamaConfig({ vocabSize, hiddenSize: 16, intermediateSize: 24, layers: 1, heads: 2, kvHeads: 2 });

const vocab = writeLlama2cTokenizer(join(work, 'tok.bin'), [' ', 'a', 'b', ' a', 'ab']);
writeLlama2cCheckpoint(join(work, 'ck.bin'), {
  dim: 16,
  hidden: 24,
  layers: 1,
  heads: 2,
  kvHeads: 2,
  vocab,
  seqLen: 16,
  sharedClassifier: true,
});
const checkpoint = join(work, 'ck.bin');
const tokenizer = join(work, 'tok.bin');

/** A folder's files and their hashes, to prove it was left exactly as it was. */
function snapshot(dir: string): Record<string, string> {
  const hash = (name: string) =>
    createHash('sha256')
      .update(readFileSync(join(dir, name)))
      .digest('hex');
  return Object.fromEntries(readdirSync(dir).map((name) => [name, hash(name)]));
}

/** A reporter whose progress fails once the weights are being written: a failure midway (disk full, a bug). */
const failingMidway: Reporter = {
  info() {},
  warn() {},
  progress: () => ({
    update() {
      throw new Error('simulated failure while writing weights');
    },
    succeed() {},
    fail() {},
  }),
};

const codeOf = (error: unknown) => (error instanceof HatError ? error.code : `not a HatError: ${error}`);

test('a forced re-synth replaces the whole folder: no stale tokenizer.json or model.onnx_data survives', async () => {
  const parent = join(work, 'replace');
  mkdirSync(parent);
  const out = join(parent, 'model');
  await importLlama2c(checkpoint, tokenizer, out);
  assert.ok(existsSync(join(out, 'tokenizer.json')));
  // A different vocabulary: the imported tokenizer would no longer match the model.
  const external = await synthModel(tiny(40), out, { force: true, externalData: true });
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.onnx', 'model.onnx_data']);
  assert.equal(external.modelPath, join(out, 'model.onnx'), 'paths name the final folder, not the staging one');
  assert.equal(external.dataPath, join(out, 'model.onnx_data'));
  await synthModel(tiny(48), out, { force: true, externalData: false });
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.onnx']);
  assert.deepEqual(readdirSync(parent), ['model'], 'no staging or set-aside folder is left beside --out');
});

test('a write that fails midway leaves the old model untouched and removes what it created', async () => {
  const parent = join(work, 'midway');
  mkdirSync(parent);
  const out = join(parent, 'model');
  await importLlama2c(checkpoint, tokenizer, out);
  const before = snapshot(out);
  await assert.rejects(
    synthModel(tiny(40), out, { force: true, reporter: failingMidway }),
    /simulated failure while writing weights/,
  );
  assert.deepEqual(snapshot(out), before);
  assert.deepEqual(readdirSync(parent), ['model']);
  // The same for a new --out whose parent folders this run created: they go too.
  const deep = join(parent, 'new', 'deeper', 'model');
  await assert.rejects(importLlama2c(checkpoint, tokenizer, deep, { reporter: failingMidway }), /simulated/);
  assert.deepEqual(readdirSync(parent), ['model']);
  // Missing parents are still created for a write that succeeds.
  await synthModel(tiny(40), deep);
  assert.ok(existsSync(join(deep, 'model.onnx')));
});

test('a tokenizer.bin whose id 1 is not <s> is refused before --out is created', async () => {
  // The helper's layout with "<s>" moved away from id 1: <unk>, "x", </s>, ...
  const good = readFileSync(tokenizer);
  const bad = join(work, 'bad-tok.bin');
  const sentinel = Buffer.from('\n<s>\n');
  const at = good.indexOf(sentinel);
  const length = Buffer.from(Int32Array.of(1).buffer);
  writeFileSync(bad, Buffer.concat([good.subarray(0, at - 4), length, Buffer.from('x'), good.subarray(at + 5)]));
  const out = join(work, 'bad-tokenizer', 'model');
  await assert.rejects(importLlama2c(checkpoint, bad, out), (error: unknown) => {
    assert.equal(codeOf(error), 'BAD_CHECKPOINT');
    assert.match((error as Error).message, /tokenizer id 1 is 'x', expected <s>/);
    return true;
  });
  assert.ok(!existsSync(join(work, 'bad-tokenizer')), 'nothing created');
});

async function refused(run: Promise<unknown>, code: string, message: RegExp, hint?: RegExp) {
  await assert.rejects(run, (error: unknown) => {
    assert.equal(codeOf(error), code);
    assert.match((error as Error).message, message);
    if (hint) assert.match((error as HatError).hint ?? '', hint);
    return true;
  });
}

test('--out holding a model or other files needs --force; an empty one does not; the inputs never go', async () => {
  const modelDir = join(work, 'refusals-model');
  await synthModel(tiny(40), modelDir);
  await refused(synthModel(tiny(40), modelDir), 'OUTPUT_EXISTS', /already holds a model\.onnx/, /--force/);
  // Other files: they would be deleted with the folder, so the hint says so (they were written in among them).
  const notes = join(work, 'refusals-notes');
  mkdirSync(notes);
  writeFileSync(join(notes, 'notes.txt'), 'mine');
  const everything = /--force to replace that folder and everything in it/;
  await refused(synthModel(tiny(40), notes), 'OUTPUT_EXISTS', /is not empty/, everything);
  assert.deepEqual(readdirSync(notes), ['notes.txt'], 'left as it was');
  const empty = join(work, 'refusals-empty');
  mkdirSync(empty);
  await synthModel(tiny(40), empty);
  assert.ok(existsSync(join(empty, 'model.onnx')));
  // --force may not replace the folder the inputs are read from.
  await refused(importLlama2c(checkpoint, tokenizer, work, { force: true }), 'OUTPUT_EXISTS', /which this run reads/);
});

test('path mistakes are named: --out a file or under a file, a folder for the tokenizer (were INTERNAL)', async () => {
  const file = join(work, 'a-file');
  writeFileSync(file, 'x');
  await refused(synthModel(tiny(40), file), 'OUTPUT_EXISTS', /exists and is not a folder/);
  // A file standing where a parent folder should be (e.g. --out /etc/passwd/x): was ENOTDIR.
  await refused(synthModel(tiny(40), join(file, 'x', 'model')), 'OUTPUT_EXISTS', /a-file is a file, not a folder/);
  // A folder given for the tokenizer: was EISDIR.
  await refused(importLlama2c(checkpoint, work, join(work, 'unused')), 'BAD_OPTION', /tokenizer .* is a folder/);
  assert.ok(!existsSync(join(work, 'unused')));
});

test('hat synth --out under a file or in /proc is one error line (ENOTDIR was INTERNAL; /proc hung)', () => {
  const file = join(work, 'cli-file');
  writeFileSync(file, 'x');
  const outs = [join(file, 'model')];
  if (process.platform === 'linux' && existsSync('/proc/self')) outs.push('/proc/hat-no-such-model');
  for (const out of outs) {
    const args = [
      'synth',
      '--config',
      'llama-7b',
      '--layers',
      '1',
      '--hidden-size',
      '16',
      '--heads',
      '2',
      '--kv-heads',
      '2',
    ];
    const run = spawnSync(
      process.execPath,
      [join(repoRoot, 'bin', 'hat'), ...args, '--intermediate-size', '8', '--vocab-size', '8', '--out', out],
      { encoding: 'utf8', env: { ...process.env, CI: '1' }, timeout: 60_000 },
    );
    assert.equal(run.signal, null, `${out}: killed after 60 s (it hangs)`);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    assert.match(run.stderr, /^error\[OUTPUT_EXISTS\]: cannot (create|write) --out /);
  }
});
