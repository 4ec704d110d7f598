/**
 * The fleet benchmark repeated on the same recordings (not a test): `hat bench <split> --fleet …` N times, then the
 * report's ratios as median and range over the runs (src/bench/fleet/fleet-spread.ts). The first run records the
 * sessions unless --recordings is given; the later runs replay its recordings, so only the machine varies.
 *
 *   node --import tsx scripts/bench-fleet-spread.ts <split-dir> --repeat N --out DIR --fleet N [--force]
 *     [other hat bench options]
 *
 * Writes DIR/run-<i>/ (each run's own report.txt, results.json, charts), DIR/run-<i>.log (its output),
 * DIR/spread.txt and DIR/spread.json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { checkOutDir } from '../src/bench/output.ts';
import { isHatError } from '../src/errors.ts';
import { fleetSpread, renderSpread } from '../src/bench/fleet/fleet-spread.ts';
import type { FleetRunStats } from '../src/bench/fleet/fleet-metrics.ts';
import { HAT_BIN } from '../src/apps/spawn-cloud.ts';

/** Bad input: one line naming the problem, with the usage as what to do. */
function usage(problem: string): never {
  console.error(
    `bench-fleet-spread: ${problem} ` +
      '(usage: bench-fleet-spread.ts <split-dir> --repeat N --out DIR --fleet N [--force] [hat bench options])',
  );
  process.exit(2);
}

const args = process.argv.slice(2);
const split = args.shift();
if (!split || split.startsWith('--')) usage('the split directory comes first');
const take = (name: string): string | undefined => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const value = args[i + 1];
  if (value === undefined || value.startsWith('--')) usage(`${name} needs a value`);
  args.splice(i, 2);
  return value;
};
const repeat = Number(take('--repeat') ?? 'NaN');
if (!Number.isInteger(repeat) || repeat < 2) usage('--repeat must be an integer of at least 2');
const out = take('--out') ?? usage('--out DIR is required');
let recordings = take('--recordings');
if (!args.includes('--fleet')) usage('pass --fleet N (and the other `hat bench --fleet` options)');
if (recordings && !relative(resolve(out), resolve(recordings)).startsWith('..')) {
  usage(`--recordings ${recordings} lies inside --out ${out}, which is replaced: copy them elsewhere first`);
}
const forceAt = args.indexOf('--force');
if (forceAt >= 0) args.splice(forceAt, 1);
try {
  checkOutDir(out, forceAt >= 0);
} catch (error) {
  if (!isHatError(error)) throw error;
  console.error(`bench-fleet-spread: ${error.message}${error.hint ? ` (${error.hint})` : ''}`);
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const commit = (() => {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();

/** One `hat bench` run; its output goes to DIR/run-<i>.log, a line per run here. */
async function runOnce(i: number): Promise<FleetRunStats[]> {
  const dir = join(out, `run-${i}`);
  const command = [HAT_BIN, 'bench', split!, ...args, '--out', dir, '--force'];
  if (recordings) command.push('--recordings', recordings);
  const log = createWriteStream(`${dir}.log`);
  const started = Date.now();
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, command, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    child.on('close', resolve);
  });
  log.end();
  if (code !== 0) {
    console.error(`bench-fleet-spread: run ${i} failed (exit ${code}); its output is in ${dir}.log`);
    process.exit(1);
  }
  console.log(`run ${i} of ${repeat}: ${((Date.now() - started) / 1000).toFixed(0)} s (${dir})`);
  const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { runs?: FleetRunStats[] };
  if (!Array.isArray(results.runs)) {
    console.error(`bench-fleet-spread: ${dir}/results.json holds no fleet runs (was --fleet given?)`);
    process.exit(1);
  }
  return results.runs;
}

const repeats: FleetRunStats[][] = [];
const started = new Date();
for (let i = 1; i <= repeat; i++) {
  repeats.push(await runOnce(i));
  if (!recordings) {
    // The later runs must replay these sessions: recording again would vary the workload, not only the machine.
    recordings = join(out, 'run-1', 'recordings');
    if (!existsSync(recordings)) {
      console.error(`bench-fleet-spread: run 1 wrote no ${recordings} to replay`);
      process.exit(1);
    }
  }
}
const cpu = cpus();
const header = [
  `fleet benchmark, ${repeat} runs on the same recordings (EMULATED devices and link, a real serve-cloud process)`,
  `commit ${commit}; ${started.toISOString()}; ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'})`,
  `each run: hat bench ${split} ${args.join(' ')} (recordings: ${recordings})`,
  '',
];
const spread = fleetSpread(repeats);
const text = [...header, ...renderSpread(spread)].join('\n') + '\n';
writeFileSync(join(out, 'spread.txt'), text);
writeFileSync(join(out, 'spread.json'), JSON.stringify({ commit, header, spread }, null, 2) + '\n');
process.stdout.write(`\n${text}`);
