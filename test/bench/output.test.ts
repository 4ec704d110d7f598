/** --out --force replaces an earlier bench's or spread's output, and nothing else. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOutDir } from '../../src/bench/output.ts';

test('--force takes a folder holding results.json or spread.json (bench:fleet:spread reruns), refuses others', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bench-out-'));
  try {
    for (const [name, marker] of [
      ['bench', 'results.json'],
      ['spread', 'spread.json'],
      ['other', 'notes.txt'],
    ]) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, marker), '{}');
    }
    assert.doesNotThrow(() => checkOutDir(join(dir, 'bench'), true));
    assert.doesNotThrow(() => checkOutDir(join(dir, 'spread'), true));
    assert.throws(() => checkOutDir(join(dir, 'other'), true), /is not an earlier bench's output/);
    assert.throws(() => checkOutDir(join(dir, 'bench'), false), /is not empty/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
