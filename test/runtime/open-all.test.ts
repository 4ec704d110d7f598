/** Opening several parts is all or nothing: when one fails to load, the sessions of the others are released. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ComposedModel } from '../../src/runtime/composed-model.ts';
import { openDeviceParts } from '../../src/runtime/device/device-parts.ts';
import { openSessionCount } from '../../src/runtime/session.ts';
import { readManifest } from '../../src/runtime/split-dir.ts';
import { makeSmallSplit } from '../helpers/runtime-fixtures.ts';

test('a part that fails to load leaves no other part session open (composed model, device parts)', async () => {
  const { split } = await makeSmallSplit();
  const manifest = readManifest(split);
  writeFileSync(join(split, manifest.parts.output.file), 'not an onnx model');
  const before = openSessionCount();
  await assert.rejects(ComposedModel.open(split, manifest), /could not load output part/);
  assert.equal(openSessionCount(), before, 'the composed model released its input and middle parts');
  await assert.rejects(openDeviceParts(split, manifest, { withAdapter: false }), /could not load output part/);
  assert.equal(openSessionCount(), before, 'the device parts released the input part');
});
