/** --out: results.json, report.txt and the SVG charts, staged beside --out and renamed into place at the end. */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';
import { isWithin } from '../file-checks.ts';
import { createStaging } from '../split/output-dir.ts';

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

/**
 * The files, written all or nothing through the staging `hat split` uses (src/split/output-dir.ts): an old output
 * goes aside and is deleted only once the new one is in place, and an interrupt removes the staging folder.
 */
export async function writeOutDir(out: string, files: Record<string, string>): Promise<void> {
  const staging = await createStaging(out, true);
  try {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(staging.dir, name)), { recursive: true }); // names may hold a folder (recordings/…)
      writeFileSync(join(staging.dir, name), text);
    }
    await staging.publish();
  } catch (error) {
    await staging.discard();
    throw new HatError('OUTPUT_EXISTS', `cannot write ${out}: ${(error as Error).message}`);
  }
}
