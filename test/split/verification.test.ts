/**
 * How `hat split` decides: the structural check (graph optimizations off on both sides, float-reassociation
 * tolerance scaled by each tensor's magnitude) alone can fail a split; the serving configuration's deviation is
 * measured and recorded in manifest.verification.serving. A corrupted part must still fail.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { externalLocation, loadModel, tensorDims } from '../../src/onnx/model-io.ts';
import { silentReporter } from '../../src/reporter.ts';
import type { SplitManifest } from '../../src/split/manifest.ts';
import { splitModel } from '../../src/split/split.ts';
import { verifySplit } from '../../src/split/verify.ts';
import { writeTinyDecoder } from './tiny-decoders.ts';

const HAT = join(import.meta.dirname, '..', '..', 'bin', 'hat');
const scratchDirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-verify-'));
  scratchDirs.push(dir);
  return dir;
};
after(() => scratchDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** Large weights: fused (optimized) runs of the whole graph and of the parts drift apart by ~1e-4. */
const DRIFTING = { weightScale: 30 };

test(
  'a model whose optimized runs drift by more than 1e-5 splits with default options ' + 'and records the drift',
  async () => {
    const model = await writeTinyDecoder(join(scratch(), 'model.onnx'), DRIFTING);
    const result = await splitModel({ model, out: join(scratch(), 'split') }, silentReporter);
    const verification = result.manifest.verification!;
    assert.equal(verification.passed, true);
    assert.deepEqual(verification.tolerance, { atol: 1e-5, rtol: 1e-5 });
    assert.deepEqual(
      verification.cases.map((c) => c.status),
      ['passed', 'passed', 'passed'],
    );
    // The structural prefill and decode steps are bit-exact with optimizations off.
    assert.equal(verification.cases[0].maxAbsError, 0);
    assert.equal(verification.cases[1].maxAbsError, 0);
    const serving = verification.serving!;
    assert.equal(serving.optimization, 'all');
    assert.ok(
      serving.maxAbsError > 1e-5,
      `optimized drift ${serving.maxAbsError} (the old absolute check refused above 1e-5)`,
    );
    assert.ok(serving.maxRelError > 0 && serving.maxRelError < 1e-4, `relative drift ${serving.maxRelError}`);
    assert.equal(serving.argmaxChanges, 0);
    const written: SplitManifest = JSON.parse(readFileSync(join(result.dir, 'manifest.json'), 'utf8'));
    assert.deepEqual(written.verification, JSON.parse(JSON.stringify(verification)));
  },
);

test(
  '--atol/--rtol override the tolerance: ' + 'at 0 the same model is refused with one line and nothing written',
  async () => {
    const model = await writeTinyDecoder(join(scratch(), 'model.onnx'), DRIFTING);
    const out = join(scratch(), 'split');
    const run = spawnSync(HAT, ['split', model, '--out', out, '--atol', '0', '--rtol', '0'], { encoding: 'utf8' });
    assert.equal(run.status, 1, run.stderr);
    const errorLines = run.stderr.split('\n').filter((line) => line.startsWith('error['));
    assert.equal(errorLines.length, 1, run.stderr);
    assert.match(
      errorLines[0],
      /^error\[BAD_SPLIT\]: the composed parts differ from the model with graph optimizations off: 3-token step/,
    );
    assert.match(errorLines[0], /tolerance atol 0 \+ rtol 0/);
    assert.equal(existsSync(out), false);
  },
);

test('a part with one weight scaled by 1.01 fails the structural check', async () => {
  const model = await writeTinyDecoder(join(scratch(), 'model.onnx'), {});
  const result = await splitModel({ model, out: join(scratch(), 'split') }, silentReporter);
  const middle = await loadModel(join(result.dir, 'middle.onnx'));
  const weight = middle.model.graph!.initializer!.find((t) => tensorDims(t).length === 2 && externalLocation(t))!;
  const where = externalLocation(weight)!;
  const dataPath = join(result.dir, where.location);
  const bytes = readFileSync(dataPath);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset + where.offset, where.length / 4);
  for (let i = 0; i < values.length; i++) values[i] *= 1.01;
  writeFileSync(dataPath, bytes);

  const report = await verifySplit(model, result.dir, result.manifest);
  assert.equal(report.passed, false);
  assert.equal(report.cases[0].status, 'failed', `${weight.name} scaled: ${JSON.stringify(report.cases[0])}`);
  assert.equal(report.serving, undefined, 'the serving configuration is not measured after a structural failure');
});
