/**
 * Split benchmark (not a test): generates a decoder of ≥ 1 GB with external data, then times, in the same run,
 * `cp` of its files against `hat split --weights copy` (targets: ≤ 2× cp, peak RSS < 1 GB) and
 * `hat split --weights reference` (target: < 2 s). Peak RSS comes from /usr/bin/time -v. Everything generated
 * is deleted at the end.
 *
 *   npm run bench:split [-- --layers 6 --hidden 2048 --dir /tmp]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { saveModel } from '../src/onnx/model-io.ts';
import { buildTinyDecoder, externalWeights } from '../test/split/tiny-decoders.ts';

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '6' },
    hidden: { type: 'string', default: '2048' },
    dir: { type: 'string', default: tmpdir() },
  },
});
const hidden = Number(values.hidden);
const layers = Number(values.layers);
const root = resolve(new URL('..', import.meta.url).pathname);
const work = mkdtempSync(join(values.dir!, 'hat-bench-split-'));
const model = join(work, 'model.onnx');
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

interface Timed {
  seconds: number;
  maxRssKiB?: number;
}

function timed(command: string, args: string[]): Timed {
  const useTime = existsSync('/usr/bin/time');
  const start = performance.now();
  const run = useTime
    ? spawnSync('/usr/bin/time', ['-v', command, ...args], { cwd: root, encoding: 'utf8' })
    : spawnSync(command, args, { cwd: root, encoding: 'utf8' });
  const seconds = (performance.now() - start) / 1000;
  if (run.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${run.stderr}`);
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(run.stderr ?? '');
  return { seconds, maxRssKiB: rss ? Number(rss[1]) : undefined };
}

try {
  process.stderr.write(`generating a ${layers}-layer decoder, hidden ${hidden}, in ${work} ...\n`);
  const sink = externalWeights(`${model}.data`);
  try {
    await saveModel(
      buildTinyDecoder(
        { layers, hidden, heads: 16, kvHeads: 4, ffn: Math.round((hidden * 8) / 3 / 256) * 256, vocab: 32000 },
        sink,
      ),
      model,
    );
  } finally {
    sink.close();
  }
  const bytes = statSync(model).size + statSync(`${model}.data`).size;
  if (bytes < 1e9)
    process.stderr.write(
      `warning: the model is only ${gib(bytes)}; pass a larger --layers/--hidden for the ≥ 1 GB target\n`,
    );

  timed('cp', [model, `${model}.data`, mkdtempSync(join(work, 'warm-'))]); // warm the page cache for both contenders
  const cp = timed('cp', [model, `${model}.data`, mkdtempSync(join(work, 'cp-'))]);
  const hat = join(root, 'bin', 'hat');
  const copy = timed(process.execPath, [hat, 'split', model, '--out', join(work, 'split-copy'), '--no-verify']);
  const reference = timed(process.execPath, [
    hat,
    'split',
    model,
    '--out',
    join(work, 'split-reference'),
    '--weights',
    'reference',
    '--no-verify',
  ]);

  const rss = (t: Timed) =>
    t.maxRssKiB === undefined ? 'n/a (no /usr/bin/time)' : `${(t.maxRssKiB / 1024).toFixed(0)} MiB`;
  const lines = [
    `model: ${layers} layers, hidden ${hidden}, ${gib(bytes)} (model.onnx + model.onnx.data), ` +
      `${cpus().length} cores (${cpus()[0]?.model ?? '?'})`,
    `cp of the files:                    ${cp.seconds.toFixed(2)} s`,
    `hat split --weights copy:           ${copy.seconds.toFixed(2)} s ` +
      `(${(copy.seconds / cp.seconds).toFixed(2)}× cp, target ≤ 2×), ` +
      `peak RSS ${rss(copy)} (target < 1024 MiB)`,
    `hat split --weights reference:      ${reference.seconds.toFixed(2)} s (target < 2 s), peak RSS ${rss(reference)}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
