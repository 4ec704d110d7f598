import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/bench-fleet-spread.ts', import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, ...args], { encoding: 'utf8', timeout: 30_000 });

test('the spread script refuses bad input in one line naming the problem, exit 2, before running anything', () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /the split directory comes first/],
    [['fixtures/default-split', '--repeat', '1', '--out', '/tmp/x', '--fleet', '2'], /--repeat must be an integer/],
    [['fixtures/default-split', '--repeat', '2', '--fleet', '2'], /--out DIR is required/],
    [['fixtures/default-split', '--repeat', '2', '--out', '/tmp/x', '--fleet', '2', '--versus', ' '], /--versus needs/],
    [
      ['fixtures/default-split', '--repeat', '2', '--out', '/tmp/x', '--fleet', '2', '--versus', '--out /tmp/y'],
      /--versus may not hold --out: both arms share it/,
    ],
    // A --versus value is read before the script's own options, which must not mistake it for theirs.
    [
      ['fixtures/default-split', '--versus', '--out', '--repeat', '2', '--out', '/tmp/x', '--fleet', '2'],
      /--versus may not hold --out: both arms share it/,
    ],
  ];
  for (const [args, problem] of cases) {
    const result = run(...args);
    assert.equal(result.status, 2, result.stderr);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr.trimEnd().split('\n').length, 1, `one line: ${JSON.stringify(result.stderr)}`);
    assert.match(result.stderr, problem);
    assert.match(result.stderr, /usage: bench-fleet-spread\.ts <split-dir> --repeat N --out DIR --fleet N/);
  }
});
