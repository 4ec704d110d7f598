/** --out: results.json, report.txt and the SVG charts, staged beside --out and renamed into place at the end. */
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { HatError } from '../errors.ts';

/** Whether `path` is `folder` or lies inside it (links resolved). */
function isWithin(path: string, folder: string): boolean {
  const real = (p: string) => (existsSync(p) ? realpathSync(p) : resolve(p));
  const rel = relative(real(folder), real(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * Checked before the run starts, so a bad --out costs nothing. `inputs`: what the run reads (the split,
 * recordings, a prompts file) — --out may not hold them, nor the current folder, even with --force; and --force
 * replaces only an earlier bench's output (one holding results.json, or a spread's spread.json), never some other
 * folder.
 */
export function checkOutDir(out: string, force: boolean, inputs: readonly string[] = []): void {
  if (existsSync(out) && !statSync(out).isDirectory()) {
    throw new HatError('OUTPUT_EXISTS', `--out ${out} is a file`, 'give a folder path for --out');
  }
  const held = [process.cwd(), ...inputs].find((input) => isWithin(input, out));
  if (held && existsSync(out)) {
    throw new HatError(
      'OUTPUT_EXISTS',
      `--out ${out} holds ${held === process.cwd() ? 'the current folder' : held}, which replacing it would delete`,
      'choose a new folder for --out',
    );
  }
  if (existsSync(out) && readdirSync(out).length > 0) {
    if (!force)
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} is not empty`,
        'pick a new folder or pass --force to replace it',
      );
    // results.json: `hat bench`'s own output; spread.json: scripts/bench-fleet-spread.ts's.
    if (!['results.json', 'spread.json'].some((file) => existsSync(join(out, file))))
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} is not an earlier bench's output (it has no results.json)`,
        '--force replaces only bench output: choose a new folder for --out',
      );
  }
  if (!existsSync(dirname(resolve(out))))
    throw new HatError('OUTPUT_EXISTS', `the parent of --out ${out} does not exist`, 'create it first');
}

export function writeOutDir(out: string, files: Record<string, string>): void {
  const target = resolve(out);
  const staging = join(dirname(target), `.${target.split('/').pop()}.partial-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  try {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(staging, name)), { recursive: true }); // names may hold a folder (recordings/…)
      writeFileSync(join(staging, name), text);
    }
    // The old output goes aside and is deleted only once the new one is in place.
    const aside = existsSync(target) ? `${staging}.old` : undefined;
    if (aside) renameSync(target, aside);
    try {
      renameSync(staging, target);
    } catch (error) {
      if (aside) renameSync(aside, target);
      throw error;
    }
    if (aside) rmSync(aside, { recursive: true, force: true });
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw new HatError('OUTPUT_EXISTS', `cannot write ${out}: ${(error as Error).message}`);
  }
}
