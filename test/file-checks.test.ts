/** writeFileWhole: a file is written whole or not at all, and a failure is a HatError naming it (not INTERNAL). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError } from '../src/errors.ts';
import { writeFileWhole } from '../src/file-checks.ts';

test('writeFileWhole writes the file and leaves nothing beside it; a failure is OUTPUT_EXISTS naming it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-write-whole-'));
  writeFileWhole(join(dir, 'a.cfg'), 'one', 'the config');
  writeFileWhole(join(dir, 'a.cfg'), 'two', 'the config');
  assert.equal(readFileSync(join(dir, 'a.cfg'), 'utf8'), 'two');
  assert.deepEqual(readdirSync(dir), ['a.cfg']);
  assert.throws(
    () => writeFileWhole(join(dir, 'no-such-folder', 'b.cfg'), 'x', 'the config b.cfg'),
    (e: unknown) =>
      e instanceof HatError && e.code === 'OUTPUT_EXISTS' && /^cannot write the config b\.cfg: /.test(e.message),
  );
  assert.deepEqual(readdirSync(dir), ['a.cfg']);
});
