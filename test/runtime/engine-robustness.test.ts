/**
 * Engine inputs that used to go through unchecked: a generation on a model whose cache an earlier one left, prompt
 * ids that are not token ids, link specs with a zero or unreadable bandwidth, and a KV state restored after a
 * rollback compacted it in place.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError, type ErrorCode } from '../../src/errors.ts';
import { writeLlamaOnnx } from '../../src/models/llama-onnx.ts';
import { randomWeights } from '../../src/models/weights.ts';
import { OnnxCausalLm } from '../../src/runtime/full-model.ts';
import { generateTokens } from '../../src/runtime/generate.ts';
import { kvLayoutOf } from '../../src/runtime/kv-cache.ts';
import { EmulatedDirection, parseLinkSpec } from '../../src/runtime/link.ts';
import { lastRow, PartRunner } from '../../src/runtime/part-runner.ts';
import { promptIds } from '../../src/runtime/prompt.ts';
import { argmax } from '../../src/runtime/sampling.ts';
import { createSession } from '../../src/runtime/session.ts';
import { SMALL_LLAMA } from '../helpers/runtime-fixtures.ts';

const failsWith = (code: ErrorCode, message: RegExp) => (error: unknown) =>
  error instanceof HatError && error.code === code && message.test(error.message) && !!error.hint;

let dir: string;
let modelPath: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hat-engine-'));
  modelPath = join(dir, 'model.onnx');
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 3, std: 0.3 }), modelPath);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('the same prompt twice on one model gives the same ids: each generation starts from an empty cache', async () => {
  const model = await OnnxCausalLm.open(modelPath, { threads: 1 });
  try {
    const prompt = [1, 5, 9, 12, 3];
    const first = (await generateTokens(model, prompt, { maxNewTokens: 6, sampler: argmax })).ids;
    assert.equal(model.length, prompt.length + 5, 'the last token is chosen, not run');
    const second = (await generateTokens(model, prompt, { maxNewTokens: 6, sampler: argmax })).ids;
    assert.deepEqual(second, first);
    // A cache left at any other length, e.g. after a different prompt, changes nothing either.
    await generateTokens(model, [7, 7, 7], { maxNewTokens: 2, sampler: argmax });
    assert.deepEqual((await generateTokens(model, prompt, { maxNewTokens: 6, sampler: argmax })).ids, first);
  } finally {
    await model.release();
  }
});

test('prompt ids must be whole numbers from 0: a negative id or a fraction is a BAD_OPTION with a hint', () => {
  for (const bad of [-1, 2.5, Number.NaN, 2 ** 53, Number.POSITIVE_INFINITY]) {
    for (const vocab of [64, undefined]) {
      assert.throws(
        () => promptIds({ ids: [1, bad, 2] }, undefined, {}, vocab),
        failsWith('BAD_OPTION', new RegExp(`prompt token id ${bad} is not a token id`)),
        `${bad}, vocabulary ${vocab}`,
      );
    }
  }
  assert.throws(() => promptIds({ ids: [64] }, undefined, {}, 64), failsWith('BAD_OPTION', /outside the vocabulary/));
  assert.deepEqual(promptIds({ ids: [0, 63, 5] }, undefined, {}, 64), [0, 63, 5]);
  assert.deepEqual(promptIds({ ids: [] }, undefined, { bosTokenId: 0 }, 64), [0]);
});

test('a link bandwidth must be a positive number, and each pair holds exactly one "="', () => {
  for (const spec of ['up=0,down=10MB,rtt=6', 'down=0kB', 'up=0.0GB', 'up=1.2.3MB', 'down=.MB']) {
    assert.throws(() => parseLinkSpec(spec), failsWith('BAD_OPTION', /is not a bandwidth of at least 1kB/), spec);
  }
  for (const spec of ['up=5MB=7', 'rtt=6=6', 'up==5MB']) {
    assert.throws(() => parseLinkSpec(spec), failsWith('BAD_OPTION', /neither a profile nor key=value pairs/), spec);
  }
  // Valid specs parse as before; a direction left out has no bandwidth limit.
  const spec = parseLinkSpec('up=0.5MB,rtt=6');
  assert.deepEqual(spec.up, { bandwidth: 5e5, latencyMs: 3, jitterMs: 0 });
  assert.equal(spec.down.bandwidth, Infinity);
  assert.equal(new EmulatedDirection(parseLinkSpec('up=1kB').up).delayFor(1000, 0), 1000);
});

test('a state restored after an in-place rollback compacted it throws; copied states stay usable', async () => {
  const session = await createSession(modelPath, { threads: 1 });
  const runner = PartRunner.fromSession(session, {
    idsInput: 'input_ids',
    output: 'logits',
    kv: kvLayoutOf(session).pairs,
  });
  const run = async (ids: number[]) => Array.from(lastRow(await runner.step({ ids }, ids.length)));
  try {
    const prompt = [1, 5, 9, 12, 3];
    runner.truncate(0);
    const straight = await run([...prompt, 7, 8]);

    // An exclusive snapshot, then an in-place rollback and new positions in its buffers: it is spent.
    runner.truncate(0);
    await run([...prompt, 20, 21, 22]);
    const exclusive = runner.snapshot({ exclusive: true });
    runner.truncate(5);
    await run([30, 31]);
    assert.throws(
      () => runner.restore(exclusive),
      failsWith('INTERNAL', /restored after a rollback compacted it in place/),
    );
    // So is a state whose snapshots were dropped before the rollback.
    runner.truncate(0);
    await run([...prompt, 20]);
    const dropped = runner.snapshot();
    runner.dropSnapshots();
    runner.truncate(5);
    assert.throws(() => runner.restore(dropped), failsWith('INTERNAL', /compacted it in place/));

    // The cloud's pattern: restore the exclusive snapshot, roll it back, step, keep the new one — right each time.
    runner.truncate(0);
    await run([...prompt, 40]);
    let kept = runner.snapshot({ exclusive: true });
    for (const extra of [[41], [42, 43]]) {
      runner.restore(kept);
      runner.truncate(5);
      await run(extra);
      kept = runner.snapshot({ exclusive: true });
    }
    runner.restore(kept);
    runner.truncate(5);
    assert.deepEqual(await run([7, 8]), straight);

    // A frozen snapshot is copied on rollback, so it restores intact.
    runner.truncate(0);
    await run([...prompt, 20, 21]);
    const frozen = runner.snapshot();
    runner.truncate(5);
    await run([50, 51]);
    runner.restore(frozen);
    runner.truncate(5);
    assert.deepEqual(await run([7, 8]), straight);
  } finally {
    await session.release();
  }
});
