import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAT_BIN } from '../../src/apps/spawn-cloud.ts';
import { addIdentityAdapter, makeSmallSplit } from '../helpers/runtime-fixtures.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

// The timeout is a hang guard, not a timing claim: the end-to-end run takes 40–95 s on a loaded 2-core machine.
const hat = (args: string[]) => spawnSync(process.execPath, [HAT_BIN, ...args], { encoding: 'utf8', timeout: 240_000 });

test('hat bench end to end on a small split: every scenario, table, results.json, charts, SIMULATION', async () => {
  const { dir, split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const out = join(dir, 'bench');
  try {
    const run = hat([
      'bench',
      split,
      '--prompt-lengths',
      '8,24',
      '--prompts-per-length',
      '1',
      '--max-new-tokens',
      '6',
      '--link',
      'wifi',
      '--simulate',
      '--out',
      out,
    ]);
    assert.equal(run.status, 0, run.stderr);
    for (const expected of [
      'machine:',
      'EMULATED link "wifi"',
      'HAT ablation',
      'SIMULATION',
      'identity placeholder',
      'u-sarathi',
    ])
      assert.ok(run.stdout.includes(expected), expected);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    const names = ['hat', 'u-shape', 'u-sarathi', 'u-spec', 'chunk-only', 'chunk-spec', 'cloud-only', 'device-only'];
    assert.deepEqual(Object.keys(results.scenarios), names);
    for (const name of names) {
      const r = results.scenarios[name];
      // Timings vary run to run; that they were measured and summarised in order does not.
      for (const field of ['ttftMs', 'tbtMs']) {
        const { mean, p50, p90, p99 } = r[field];
        assert.ok(mean >= 0 && p50 >= 0 && p50 <= p90 && p90 <= p99, `${name}.${field}: ${JSON.stringify(r[field])}`);
      }
      assert.ok(r.ttftMs.mean > 0, name);
      assert.equal(r.requests, 2, name);
      assert.equal(r.failed, 0, name);
    }
    assert.equal(results.scenarios['u-shape'].ratioToUShape.ttftMean, 1);
    assert.equal(results.scenarios['device-only'].bytesUpPerToken, 0);
    assert.ok(
      results.scenarios['cloud-only'].bytesUpPerToken < results.scenarios['u-shape'].bytesUpPerToken,
      'text is smaller than hidden states',
    );
    assert.equal(results.simulation.label, 'SIMULATION (not a measurement)');
    assert.equal(results.simulation.results.length, 10);
    for (const chart of ['ttft-by-scenario.svg', 'tbt-by-scenario.svg', 'ttft-vs-prompt-length.svg']) {
      assert.match(readFileSync(join(out, chart), 'utf8'), /^<svg[^>]*>.*u-shape.*<\/svg>$/s, chart);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hat bench refuses bad input in one line, before running, and leaves --out as it was', async () => {
  const { dir, split } = await makeSmallSplit();
  const out = join(dir, 'taken');
  mkdirSync(out);
  writeFileSync(join(out, 'keep.txt'), 'mine');
  try {
    const taken = hat(['bench', split, '--out', out]);
    assert.notEqual(taken.status, 0);
    assert.match(taken.stderr.trim(), /^error\[OUTPUT_EXISTS\]: --out .* is not empty — [^\n]*$/);
    assert.deepEqual(readdirSync(out), ['keep.txt']);
    // --force used to delete any folder, this one or one holding the split (or the checkout, with --out .).
    const forced = hat(['bench', split, '--out', out, '--force']);
    assert.match(forced.stderr.trim(), /^error\[OUTPUT_EXISTS\]: --out .* is not an earlier bench's output/);
    assert.deepEqual(readdirSync(out), ['keep.txt']);
    const holdsSplit = hat(['bench', split, '--out', dir, '--force']);
    assert.match(holdsSplit.stderr.trim(), /^error\[OUTPUT_EXISTS\]: --out .* holds .*, which replacing it would/);
    assert.ok(existsSync(join(split, 'manifest.json')));
    const unknown = hat(['bench', split, '--scenarios', 'hat,u-medusa', '--out', join(dir, 'new')]);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr.trim(), /^error\[BAD_OPTION\]: --scenarios: unknown scenario "u-medusa"/);
    const noAdapter = hat([
      'bench',
      split,
      '--scenarios',
      'hat',
      '--prompt-lengths',
      '8',
      '--prompts-per-length',
      '1',
      '--max-new-tokens',
      '2',
      '--out',
      join(dir, 'new'),
    ]);
    assert.equal(noAdapter.status, 0, noAdapter.stderr);
    assert.match(noAdapter.stdout, /hat skipped: the split has no adapter/);
    assert.ok(existsSync(join(dir, 'new', 'results.json')));
    // The staging folders (.<name>.partial-<pid>, and .old beside it while replacing) are gone.
    assert.deepEqual(
      readdirSync(dir).filter((name) => name.includes('.partial-')),
      [],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("prompt lengths past the model's context are clamped, as --fleet does; --json prints results.json", () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-clamp-'));
  try {
    const split = join(repoRoot, 'fixtures', 'default-split'); // config.json: 1,024 positions
    const run = hat([
      'bench',
      split,
      '--scenarios',
      'u-shape',
      '--prompt-lengths',
      '1024',
      '--prompts-per-length',
      '1',
      '--max-new-tokens',
      '4',
      '--out',
      join(dir, 'out'),
      '--json',
    ]);
    assert.equal(run.status, 0, run.stderr);
    // --json prints results.json itself (it printed only {"out": ...}).
    assert.equal(run.stdout, readFileSync(join(dir, 'out', 'results.json'), 'utf8'));
    assert.match(JSON.parse(run.stdout).notes.join('\n'), /prompt lengths 1024 clamped to \d+ tokens/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hat bench with several device processes and Poisson arrivals serves every request', async () => {
  const { dir, split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const out = join(dir, 'multi');
  try {
    const run = hat([
      'bench',
      split,
      '--scenarios',
      'hat,u-shape',
      '--prompt-lengths',
      '8,16',
      '--prompts-per-length',
      '2',
      '--max-new-tokens',
      '4',
      '--devices',
      '3',
      '--rate',
      '20',
      '--link',
      'lan',
      '--cores',
      'shared',
      '--out',
      out,
    ]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /share these \d+ cores/);
    assert.match(run.stdout, /open loop: 3 device\(s\), Poisson arrivals at 20 req\/s/);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    for (const name of ['hat', 'u-shape']) {
      const r = results.scenarios[name];
      assert.equal(r.failed, 0, name);
      // Two prompts of each length, each served once, whichever device took it.
      assert.equal(r.requests, 4, name);
      const byLength = r.byPromptLength as Array<{ promptTokens: number; requests: number }>;
      assert.deepEqual(
        byLength.map((b) => [b.promptTokens, b.requests]),
        [
          [8, 2],
          [16, 2],
        ],
        name,
      );
      assert.ok(r.serverTokensPerSecond > 0, name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
