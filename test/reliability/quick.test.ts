/**
 * The quick part of the reliability suite (the long one is `npm run test:reliability`): a few hundred mutated
 * frames against a real serve-cloud process while a healthy session's results stay exact, then connect /
 * disconnect cycles after which no session and no extra descriptor is left.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { manifestHash, readManifest } from '../../src/runtime/split-dir.ts';
import { churn, fuzzServer, type FuzzTarget } from '../../src/reliability/fuzz.ts';
import { makeToySplitDir, TOY_HIDDEN } from '../helpers/toy-split.ts';

const split = makeToySplitDir();
let cloud: SpawnedCloud;
let target: FuzzTarget;

before(async () => {
  cloud = await spawnCloud(split, ['--max-sessions', '16', '--max-context', '64']);
  target = {
    url: cloud.url,
    manifestHash: manifestHash(readManifest(split)),
    hiddenSize: TOY_HIDDEN,
    pid: cloud.process.pid!,
  };
});
after(() => cloud.stop());

const alive = () => cloud.process.exitCode === null && cloud.process.signalCode === null;
const sessions = async () =>
  ((await (await fetch(`${cloud.url.replace('ws://', 'http://')}/health`)).json()) as { sessions: number }).sessions;

test("300 mutated frames: the server stays up and a healthy session's results stay exact", async () => {
  const report = await fuzzServer(target, 300, 7, alive);
  assert.equal(report.framesTried, 300);
  assert.equal(report.serverAlive, true);
  assert.ok(report.healthyRounds > 0);
  assert.equal(report.healthyMismatches, 0);
  assert.ok(Object.keys(report.kinds).length >= 10, `mutation kinds ${Object.keys(report.kinds)}`);
});

test('90 connect/disconnect cycles (two thirds abrupt) leave no session and no descriptor behind', async () => {
  const report = await churn(target, 90, sessions);
  assert.equal(report.abrupt, 60);
  assert.equal(await sessions(), 0);
  assert.ok(
    report.after.openFds <= report.before.openFds + 2,
    `descriptors ${report.before.openFds} → ${report.after.openFds}`,
  );
});
