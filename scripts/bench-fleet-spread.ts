/**
 * The fleet benchmark repeated on the same recordings (not a test): `hat bench <split> --fleet …` N times, then the
 * report's ratios as median and range over the runs (src/bench/fleet/fleet-spread.ts). The first run records the
 * sessions unless --recordings is given; the later runs replay its recordings, so only the machine varies.
 *
 *   node --import tsx scripts/bench-fleet-spread.ts <split-dir> --repeat N --out DIR --fleet N [--force]
 *     [--versus "<hat bench options>"] [other hat bench options]
 *
 * --versus compares two configurations (an A/B): N runs each, alternating a, b, b, a, a, b, … on the same recordings,
 * arm b with the given options added (e.g. "--min-batch 3" or "--rows-advice off"); each arm gets its own spread.
 *
 * Writes DIR/run-<i>/ (each run's own report.txt, results.json, charts; run-<i>-<arm>/ with --versus),
 * DIR/run-<i>.log (its output), DIR/spread.txt and DIR/spread.json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { checkOutDir } from '../src/bench/output.ts';
import { isHatError } from '../src/errors.ts';
import { alternatingArms, fleetSpread, renderSpread } from '../src/bench/fleet/fleet-spread.ts';
import type { FleetRunStats } from '../src/bench/fleet/fleet-metrics.ts';
import { HAT_BIN } from '../src/apps/spawn-cloud.ts';

/** Bad input: one line naming the problem, with the usage as what to do. */
function usage(problem: string): never {
  console.error(
    `bench-fleet-spread: ${problem} ` +
      '(usage: bench-fleet-spread.ts <split-dir> --repeat N --out DIR --fleet N [--force] [--versus "<options>"] ' +
      '[hat bench options])',
  );
  process.exit(2);
}

const args = process.argv.slice(2);
const split = args.shift();
if (!split || split.startsWith('--')) usage('the split directory comes first');
// Its value is itself options ("--min-batch 3"), so it is taken as it stands, and first: the options taken below must
// not find their names inside it.
const versusAt = args.indexOf('--versus');
const versusText = versusAt < 0 ? undefined : (args.splice(versusAt, 2)[1] ?? '');
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
const versus = versusText?.split(/\s+/).filter(Boolean);
if (versusText !== undefined && !versus!.length) usage('--versus needs the options arm b adds, e.g. "--min-batch 3"');
const reserved = versus?.find((option) => ['--out', '--recordings', '--force', '--fleet'].includes(option));
if (reserved) usage(`--versus may not hold ${reserved}: both arms share it`);
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

type Arm = 'a' | 'b';
/** Each run's arm, in run order: all 'a' without --versus. */
const arms: Arm[] = versus ? alternatingArms(repeat) : Array.from({ length: repeat }, () => 'a');
const optionsOf = (arm: Arm) => (arm === 'b' ? [...args, ...versus!] : args);
const runDir = (i: number, arm: Arm) => join(out, versus ? `run-${i}-${arm}` : `run-${i}`);

/** One `hat bench` run; its output goes to DIR/run-<i>.log, a line per run here. */
async function runOnce(i: number, arm: Arm): Promise<FleetRunStats[]> {
  const dir = runDir(i, arm);
  const command = [HAT_BIN, 'bench', split!, ...optionsOf(arm), '--out', dir, '--force'];
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
  console.log(`run ${i} of ${arms.length}: ${((Date.now() - started) / 1000).toFixed(0)} s (${dir})`);
  const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { runs?: FleetRunStats[] };
  if (!Array.isArray(results.runs)) {
    console.error(`bench-fleet-spread: ${dir}/results.json holds no fleet runs (was --fleet given?)`);
    process.exit(1);
  }
  return results.runs;
}

const repeats: Record<Arm, FleetRunStats[][]> = { a: [], b: [] };
const started = new Date();
for (const [index, arm] of arms.entries()) {
  repeats[arm].push(await runOnce(index + 1, arm));
  if (!recordings) {
    // The later runs must replay these sessions: recording again would vary the workload, not only the machine.
    recordings = join(runDir(index + 1, arm), 'recordings');
    if (!existsSync(recordings)) {
      console.error(`bench-fleet-spread: run 1 wrote no ${recordings} to replay`);
      process.exit(1);
    }
  }
}
const cpu = cpus();
const header = [
  `fleet benchmark, ${arms.length} runs on the same recordings (EMULATED devices and link, a real serve-cloud process)`,
  `commit ${commit}; ${started.toISOString()}; ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'})`,
  versus
    ? `an A/B, ${repeat} runs per arm in the order ${arms.join(', ')}: arm a runs hat bench ${split} ` +
      `${args.join(' ')}; arm b adds ${versus.join(' ')} (recordings: ${recordings})`
    : `each run: hat bench ${split} ${args.join(' ')} (recordings: ${recordings})`,
  '',
];
const spreads = { a: fleetSpread(repeats.a), ...(versus ? { b: fleetSpread(repeats.b) } : {}) };
const body = versus
  ? [
      `Arm a (${args.join(' ')}):`,
      ...renderSpread(spreads.a),
      '',
      `Arm b (adds ${versus.join(' ')}):`,
      ...renderSpread(spreads.b!),
    ]
  : renderSpread(spreads.a);
const text = [...header, ...body].join('\n') + '\n';
writeFileSync(join(out, 'spread.txt'), text);
const json = versus ? { commit, header, versus, arms: spreads } : { commit, header, spread: spreads.a };
writeFileSync(join(out, 'spread.json'), JSON.stringify(json, null, 2) + '\n');
process.stdout.write(`\n${text}`);
