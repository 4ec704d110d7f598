/**
 * fuzzServer when the server dies under it: it must end (not retry refused sessions forever), with no unhandled
 * rejection from the healthy session, and report serverAlive false — with and without an isAlive callback.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { manifestHash, readManifest } from '../../src/runtime/split-dir.ts';
import { fuzzServer, type FuzzReport } from '../../src/reliability/fuzz.ts';
import { makeToySplitDir, TOY_HIDDEN } from '../helpers/toy-split.ts';

const split = makeToySplitDir();
const clouds: SpawnedCloud[] = [];
after(() => Promise.all(clouds.map((c) => c.stop())));

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);
after(() => process.off('unhandledRejection', onUnhandled));

async function fuzzUntilKilled(withIsAlive: boolean): Promise<FuzzReport> {
  const cloud = await spawnCloud(split, ['--max-sessions', '16', '--max-context', '64']);
  clouds.push(cloud);
  const target = {
    url: cloud.url,
    manifestHash: manifestHash(readManifest(split)),
    hiddenSize: TOY_HIDDEN,
    pid: cloud.process.pid!,
  };
  const alive = () => cloud.process.exitCode === null && cloud.process.signalCode === null;
  setTimeout(() => cloud.process.kill('SIGKILL'), 500);
  let deadline: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      fuzzServer(target, 1_000_000_000, 7, withIsAlive ? alive : undefined),
      new Promise<never>((_, reject) => {
        deadline = setTimeout(() => reject(new Error('fuzzServer still running 20 s after the kill')), 20_000);
      }),
    ]);
  } finally {
    clearTimeout(deadline);
  }
}

test('server killed mid-fuzz: fuzzServer resolves with serverAlive false', async () => {
  const report = await fuzzUntilKilled(true);
  assert.equal(report.serverAlive, false);
  assert.ok(report.framesTried > 0 && report.framesTried < 1_000_000_000);
  assert.ok(report.stoppedEarly, 'stoppedEarly names why');
  assert.deepEqual(unhandled, []);
});

test('server killed mid-fuzz, no isAlive callback: refused sessions end the fuzzing, serverAlive false', async () => {
  const report = await fuzzUntilKilled(false);
  assert.equal(report.serverAlive, false);
  assert.ok(report.stoppedEarly, 'stoppedEarly names why');
  assert.deepEqual(unhandled, []);
});
