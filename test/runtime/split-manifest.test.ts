/**
 * readManifest checks the fields every reader relies on: a hand-edited or truncated manifest.json (valid JSON, wrong
 * shape) was a TypeError — INTERNAL, exit 70 — wherever a field was first read (`hat generate`, serve-cloud).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError } from '../../src/errors.ts';
import { readManifest } from '../../src/runtime/split-dir.ts';

const DEFAULT_MANIFEST = new URL('../../fixtures/default-split/manifest.json', import.meta.url).pathname;

function splitWith(manifest: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'hat-manifest-'));
  writeFileSync(join(dir, 'manifest.json'), manifest);
  return dir;
}

const badManifest = (detail: RegExp) => (error: unknown) =>
  error instanceof HatError && error.code === 'BAD_MANIFEST' && detail.test(error.message);

test('the shipped manifest passes the shape check', () => {
  assert.equal(readManifest(splitWith(readFileSync(DEFAULT_MANIFEST, 'utf8'))).hidden.size, 256);
});

test('valid JSON of the wrong shape is BAD_MANIFEST naming the field, not a TypeError', () => {
  assert.throws(() => readManifest(splitWith('null')), badManifest(/has format undefined/));
  assert.throws(() => readManifest(splitWith('{"format":"hat-split/1"}')), badManifest(/not a whole split manifest/));
  const manifest = JSON.parse(readFileSync(DEFAULT_MANIFEST, 'utf8'));
  delete manifest.parts.middle;
  assert.throws(() => readManifest(splitWith(JSON.stringify(manifest))), badManifest(/parts\.middle/));
  const manifest2 = JSON.parse(readFileSync(DEFAULT_MANIFEST, 'utf8'));
  manifest2.kv.output = 'none';
  assert.throws(() => readManifest(splitWith(JSON.stringify(manifest2))), badManifest(/kv\.output/));
});
