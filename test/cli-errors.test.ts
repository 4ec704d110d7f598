/**
 * The real CLI on mistakes every user makes once: each is one `error[CODE]: message — hint` line and exit 1 —
 * commander's own parse errors too (they printed two lines and no code) — and serve-cloud on a port in use
 * (it crashed with a stack trace).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './helpers/shared-fixtures.ts';

const SPLIT = join(repoRoot, 'fixtures', 'default-split');

function hat(...args: string[]) {
  const run = spawnSync(process.execPath, [join(repoRoot, 'bin', 'hat'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, CI: '1' },
    timeout: 60_000,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr.trim() };
}

/** One error line, the last (serve-cloud's JSON log lines may precede it); `only`: nothing else on stderr. */
function assertOneLine(args: string[], code: string, pattern: RegExp, only = true): void {
  const { status, stderr } = hat(...args);
  assert.equal(status, 1, stderr);
  const lines = stderr.split('\n');
  if (only) assert.equal(lines.length, 1, `one line, got:\n${stderr}`);
  assert.equal(lines.filter((l) => l.startsWith('error')).length, 1, stderr);
  const last = lines[lines.length - 1];
  assert.match(last, new RegExp(`^error\\[${code}\\]: `), stderr);
  assert.match(last, / — /, 'with a hint');
  assert.match(last, pattern);
}

test('parse errors are one BAD_OPTION line with a hint', () => {
  assertOneLine(['split', 'model.onnx'], 'BAD_OPTION', /required option '--out <dir>' not specified/);
  assertOneLine(['inspect', SPLIT, '--bogus'], 'BAD_OPTION', /unknown option '--bogus'/);
  assertOneLine(['nonsense'], 'BAD_OPTION', /unknown command 'nonsense'/);
});

test('an empty option value is refused, not read as 0 or as the default', () => {
  assertOneLine(['serve-cloud', SPLIT, '--port', ''], 'BAD_OPTION', /--port is empty/);
  assertOneLine(['generate', SPLIT, '--slm', '--seed', ' '], 'BAD_OPTION', /--seed is empty/);
});

test('serve-cloud refuses a --min-batch no verification batch could reach', () => {
  assertOneLine(['serve-cloud', SPLIT, '--max-batch', '4', '--min-batch', '5'], 'BAD_OPTION', /--min-batch: must not/);
  assertOneLine(['serve-cloud', SPLIT, '--min-batch', '1'], 'BAD_OPTION', /--min-batch/);
});

test("a serve-cloud that hat bench starts keeps its error's code when it refuses its options", () => {
  assertOneLine(
    ['bench', SPLIT, '--fleet', '2', '--rate', 'closed', '--duration', '1', '--max-batch', '2', '--min-batch', '3'],
    'BAD_OPTION',
    /serve-cloud exited with code 1 before listening: --min-batch: must not exceed --max-batch/,
    false,
  );
});

test('serve-cloud on a port in use says so in one line', async () => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address() as { port: number };
  try {
    assertOneLine(
      ['serve-cloud', SPLIT, '--host', '127.0.0.1', '--port', String(port)],
      'NETWORK',
      /EADDRINUSE/,
      false,
    );
  } finally {
    holder.close();
  }
});

test('hat split checks --out before it loads the model (a big model takes minutes)', () => {
  const out = mkdtempSync(join(tmpdir(), 'hat-cli-out-'));
  try {
    writeFileSync(join(out, 'keep.txt'), 'x');
    const model = join(repoRoot, 'fixtures', 'default', 'model.onnx');
    // One line: nothing of the model (its analysis prints info lines) comes before the refusal.
    assertOneLine(['split', model, '--out', out], 'OUTPUT_EXISTS', /not empty/);
    assertOneLine(
      ['split', model, '--out', join(out, 'no', 'such')],
      'OUTPUT_EXISTS',
      /parent folder .* does not exist/,
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('hat inspect takes a model folder, as hat generate does (it said "model file not found")', () => {
  const run = hat('inspect', join(repoRoot, 'fixtures', 'default'), '--json');
  assert.equal(run.status, 0, run.stderr);
  assertOneLine(['inspect', tmpdir()], 'FILE_NOT_FOUND', /is a folder without model\.onnx/);
});

test('a folder for a file or a file for a folder is named (they were EISDIR / ENOTDIR as INTERNAL)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-cli-paths-'));
  try {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    assertOneLine(['serve-cloud', SPLIT, '--token-file', dir], 'BAD_OPTION', /--token-file .* is a folder/, false);
    assertOneLine(['deploy', 'haproxy', '--backend', 'a:1', '--out', dir, '--force'], 'OUTPUT_EXISTS', /is a folder/);
    assertOneLine(['deploy', 'haproxy', '--backend', 'a:1', '--cert', dir], 'BAD_OPTION', /--cert .* is a folder/);
    assertOneLine(['bench', SPLIT, '--out', file], 'OUTPUT_EXISTS', /--out .* is a file/);
    assertOneLine(['import-llama2c', dir, file, '--out', join(dir, 'out')], 'BAD_OPTION', /checkpoint .* is a folder/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hat bench --fleet reads --recordings before it starts any serve-cloud', () => {
  const missing = join(tmpdir(), 'hat-no-such-recordings');
  const run = hat('bench', SPLIT, '--fleet', '2', '--recordings', missing);
  assert.equal(run.status, 1);
  assert.equal(run.stderr.split('\n').length, 1, `one line, nothing started first:\n${run.stderr}`);
  assert.match(run.stderr, /^error\[FILE_NOT_FOUND\]: recordings folder .* does not exist — /);
});

test('files and names that parse but are wrong are one line, not INTERNAL (exit 70)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-cli-shapes-'));
  try {
    writeFileSync(join(dir, 'manifest.json'), '{"format":"hat-split/1"}');
    assertOneLine(['generate', dir, '--slm', '--prompt', 'hi'], 'BAD_MANIFEST', /not a whole split manifest/);
    const file = join(dir, 'r.json');
    writeFileSync(file, '{}');
    assertOneLine(['bench', SPLIT, '--fleet', '2', '--recordings', file], 'BAD_OPTION', /is a file, not a folder/);
    const cloud = ['run-device', SPLIT, '--cloud', 'ws://127.0.0.1:1', '--prompt', 'hi'];
    assertOneLine([...cloud, '--link', 'constructor'], 'BAD_OPTION', /--link "constructor" is neither/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hat demo --split <no split> is one line (its link line came first)', () => {
  assertOneLine(['demo', '--split', join(tmpdir(), 'hat-no-such-split')], 'BAD_MANIFEST', /holds no split/);
});

test('errors that had no hint now say what to do', () => {
  const out = join(tmpdir(), 'hat-synth-no-hint');
  const shape = ['--hidden-size', '10', '--heads', '3', '--kv-heads', '3', '--layers', '1', '--vocab-size', '32'];
  assertOneLine(['synth', ...shape, '--intermediate-size', '8', '--out', out], 'BAD_OPTION', /headDim/);
  assertOneLine(['bench', SPLIT, '--fleet', '2', '--prompts', 'p.jsonl'], 'BAD_OPTION', /not --prompts/);
  assertOneLine(['bench', SPLIT, '--prompts', join(tmpdir(), 'no-such.jsonl')], 'FILE_NOT_FOUND', /does not exist/);
});
