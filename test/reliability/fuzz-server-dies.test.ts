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
import { waitFor, withinDeadline } from '../helpers/wait-for.ts';

const split = makeToySplitDir();
const clouds: SpawnedCloud[] = [];

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);
after(async () => {
  await Promise.all(clouds.map((c) => c.stop()));
  // A rejection left by the last session would surface after the tests' own checks: give it a turn to.
  await new Promise((resolve) => setImmediate(resolve));
  process.off('unhandledRejection', onUnhandled);
  assert.deepEqual(unhandled, []);
});

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
  const fuzzing = fuzzServer(target, 1_000_000_000, 7, withIsAlive ? alive : undefined);
  let ended = false;
  fuzzing.then(
    () => (ended = true),
    () => (ended = true),
  );
  // Killed once the server has refused a fuzzed frame (its log says so): the fuzzer is mid-fuzz, with frames tried.
  const refusedOne = () => cloud.log.some((line) => /"event":"(session-error|rejected)"/.test(line));
  try {
    await waitFor(() => refusedOne() || ended, { what: 'the server to refuse a fuzzed frame', timeoutMs: 30_000 });
    assert.ok(!ended, 'fuzzServer ended before the server was killed');
  } finally {
    cloud.process.kill('SIGKILL');
  }
  return withinDeadline(fuzzing, { what: 'fuzzServer to end after the kill', timeoutMs: 20_000 });
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
