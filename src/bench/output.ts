/** --out: results.json, report.txt and the SVG charts, staged beside --out and renamed into place at the end. */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';

/** Checked before the run starts, so a bad --out costs nothing. */
export function checkOutDir(out: string, force: boolean): void {
  if (existsSync(out) && !statSync(out).isDirectory()) {
    throw new HatError('OUTPUT_EXISTS', `--out ${out} is a file`, 'give a folder path for --out');
  }
  if (existsSync(out) && readdirSync(out).length > 0 && !force) {
    throw new HatError('OUTPUT_EXISTS', `--out ${out} is not empty`, 'pick a new folder or pass --force to replace it');
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
    rmSync(target, { recursive: true, force: true });
    renameSync(staging, target);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw new HatError('OUTPUT_EXISTS', `cannot write ${out}: ${(error as Error).message}`);
  }
}
