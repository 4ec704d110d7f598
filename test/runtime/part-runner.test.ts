import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { openPart, readManifest } from '../../src/runtime/split-dir.ts';
import type { PartRunner } from '../../src/runtime/part-runner.ts';
import { makeSmallSplit } from '../helpers/runtime-fixtures.ts';

let dir: string;
let middle: PartRunner;
let hidden: Float32Array;
const d = 32;

before(async () => {
  const made = await makeSmallSplit();
  dir = made.dir;
  middle = await openPart(made.split, readManifest(made.split), 'middle');
  hidden = new Float32Array(12 * d).map((_, i) => Math.sin(i * 0.37));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Middle output of rows 9..11 after a rollback of a 9-token prefill, or straight after 9 tokens. */
async function tail(prepare: () => Promise<void>): Promise<Float32Array> {
  await prepare();
  return (await middle.step({ hidden: hidden.subarray(9 * d) }, 3)).data;
}

test('rollback in place, by copy and from a snapshot give the same cache as never having gone further', async () => {
  const straight = await tail(async () => {
    middle.truncate(0);
    await middle.step({ hidden: hidden.subarray(0, 9 * d) }, 9);
  });
  // In place: nothing else holds the state, so the heads are compacted inside the buffers ORT returned.
  const inPlace = await tail(async () => {
    middle.truncate(0);
    await middle.step({ hidden }, 12);
    middle.truncate(9);
  });
  assert.deepEqual(inPlace, straight);

  // A snapshot is frozen: rolling back copies, so the snapshot restores intact after the runner moved on.
  middle.truncate(0);
  await middle.step({ hidden }, 12);
  const kept = middle.snapshot();
  const before = [...kept.tensors.values()].map((t) => (t.data as Float32Array).slice());
  const copied = await tail(async () => middle.truncate(9));
  assert.deepEqual(copied, straight);
  assert.deepEqual(
    [...kept.tensors.values()].map((t) => t.data as Float32Array),
    before,
    'the snapshot was not touched',
  );
  middle.restore(kept);
  assert.deepEqual(await tail(async () => middle.truncate(9)), straight);

  // An exclusive snapshot (the cloud's per-session caches) is still compacted in place.
  middle.truncate(0);
  await middle.step({ hidden }, 12);
  const exclusive = middle.snapshot({ exclusive: true });
  const buffer = (exclusive.tensors.values().next().value!.data as Float32Array).buffer;
  middle.restore(exclusive);
  middle.truncate(9);
  assert.equal(
    (middle.snapshot().tensors.values().next().value!.data as Float32Array).buffer,
    buffer,
    'no copy was made',
  );
});
