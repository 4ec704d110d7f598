/**
 * npm run test:reliability — the long part of the reliability suite against a real serve-cloud process:
 * ≥ 5,000 mutated frames with a concurrent healthy session checked for exact results, then 1,000 connect /
 * disconnect cycles (two thirds abrupt) with the server's RSS and open descriptors before and after. The short
 * parts (slow reader, pipelining, drain under load, replica kill) are tests, run after this by the npm script.
 * Usage: node --import tsx scripts/reliability/run.ts [--split DIR] [--frames N] [--cycles N]
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { spawnCloud } from '../../src/apps/spawn-cloud.ts';
import { manifestHash, readManifest } from '../../src/runtime/split-dir.ts';
import { churn, fuzzServer } from '../../src/reliability/fuzz.ts';

const { values } = parseArgs({
  options: {
    split: { type: 'string', default: 'fixtures/default-split' },
    frames: { type: 'string', default: '5000' },
    cycles: { type: 'string', default: '1000' },
  },
});
const split = values.split!;
const manifest = readManifest(split);
const cloud = await spawnCloud(split, ['--max-sessions', '64', '--handshake-timeout', '5']);
const pid = cloud.process.pid!;
const target = { url: cloud.url, manifestHash: manifestHash(manifest), hiddenSize: manifest.hidden.size, pid };
const alive = () => cloud.process.exitCode === null && cloud.process.signalCode === null;
const sessions = async () =>
  ((await (await fetch(cloud.url.replace('ws://', 'http://') + '/health')).json()) as { sessions: number }).sessions;
let failed = false;
try {
  console.log(`# reliability — ${new Date().toISOString()}`);
  console.log(
    `machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} cores; serve-cloud on ${split} (pid ${pid})`,
  );
  const started = performance.now();
  const fuzz = await fuzzServer(target, Number(values.frames), 1, alive);
  console.log(
    `\nfuzzing: ${fuzz.framesTried} mutated frames over ${fuzz.sessions} sessions ` +
      `in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  console.log(
    `  by kind: ${Object.entries(fuzz.kinds)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
  );
  console.log(`  server crashed: ${fuzz.serverAlive ? 'no (0 crashes)' : 'YES'}`);
  if (fuzz.stoppedEarly) console.log(`  fuzzing stopped early: ${fuzz.stoppedEarly}`);
  console.log(
    `  healthy session: ${fuzz.healthyRounds} rounds during the fuzzing, ` +
      `${fuzz.healthyMismatches} differing from its first result`,
  );
  const cycled = await churn(target, Number(values.cycles), sessions);
  const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  console.log(`\nchurn: ${cycled.cycles} connect/disconnect cycles (${cycled.abrupt} abrupt)`);
  console.log(
    `  RSS ${mb(cycled.before.rssBytes)} MB before, ${mb(cycled.after.rssBytes)} MB after; ` +
      `open descriptors ${cycled.before.openFds} before, ${cycled.after.openFds} after; ` +
      `sessions left ${await sessions()}`,
  );
  failed =
    !fuzz.serverAlive || fuzz.healthyMismatches > 0 || cycled.after.openFds > cycled.before.openFds + 2 || !alive();
} finally {
  await cloud.stop();
}
console.log(failed ? '\nFAILED' : '\nall held');
process.exit(failed ? 1 : 0);
