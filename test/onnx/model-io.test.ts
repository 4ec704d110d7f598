import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkExternalData, loadModel, tensorBytes } from '../../src/onnx/model-io.ts';
import { HatError } from '../../src/errors.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';

test('loadModel rejects a missing file and a non-ONNX file with HatError', async () => {
  await assert.rejects(loadModel('/nonexistent/model.onnx'), (e: HatError) => e.code === 'FILE_NOT_FOUND');
  const dir = mkdtempSync(join(tmpdir(), 'hat-io-'));
  writeFileSync(join(dir, 'bad.onnx'), 'definitely not protobuf \u0000\u0001\u0002');
  await assert.rejects(loadModel(join(dir, 'bad.onnx')), (e: HatError) => e.code === 'BAD_MODEL');
});

const genai = sharedFixture('genai-tiny-llama-fp16', 'model.onnx');
test('external data is read at its offsets and a truncated data file is reported', { skip: genai.skip }, async () => {
  const loaded = await loadModel(genai.path);
  const needed = checkExternalData(loaded);
  assert.equal(needed.size, 1);
  const embedding = loaded.model.graph!.initializer!.find((t) => t.name === 'model.embed_tokens.weight')!;
  assert.equal(tensorBytes(loaded, embedding).length, 32000 * 16 * 2);

  const dir = mkdtempSync(join(tmpdir(), 'hat-io-'));
  copyFileSync(genai.path, join(dir, 'model.onnx'));
  writeFileSync(join(dir, 'model.onnx.data'), readFileSync(genai.path + '.data'));
  truncateSync(join(dir, 'model.onnx.data'), 1000);
  const copy = await loadModel(join(dir, 'model.onnx'));
  assert.throws(
    () => checkExternalData(copy),
    (e: HatError) => e.code === 'MISSING_EXTERNAL_DATA',
  );
});
