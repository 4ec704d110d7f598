/**
 * All-or-nothing output: everything is written into a hidden staging directory beside --out and renamed into
 * place at the end (same filesystem, so the rename is atomic), so a failure leaves no half-written split.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';

export interface Staging {
  /** Where to write. */
  dir: string;
  /** The final location. */
  target: string;
  publish(): Promise<void>;
  discard(): Promise<void>;
}

export async function createStaging(out: string, replace: boolean): Promise<Staging> {
  const target = resolve(out);
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) {
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} exists and is not a directory`,
        'choose a directory path for --out',
      );
    }
    if (readdirSync(target).length > 0 && !replace) {
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} exists and is not empty`,
        'choose another --out, or pass --force to replace it',
      );
    }
  }
  let dir: string;
  try {
    dir = await mkdtemp(join(dirname(target), `.${basename(target)}.hat-partial-`));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot write --out ${out}: ${
        code === 'ENOENT'
          ? `its parent folder ${dirname(target)} does not exist`
          : `${dirname(target)} is not writable (${code})`
      }`,
      'choose a writable location for --out',
    );
  }
  return {
    dir,
    target,
    async publish() {
      await chmod(dir, 0o755); // mkdtemp creates it private; the published split is an ordinary folder
      if (existsSync(target)) await rm(target, { recursive: true, force: true });
      await rename(dir, target);
    },
    async discard() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
