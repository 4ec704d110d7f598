/**
 * Path checks at the edges, so a folder given for a file (or a file for a folder, or a missing parent) is a
 * one-line HatError naming the option, not an EISDIR / ENOTDIR surfacing as INTERNAL.
 */
import { existsSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { HatError } from './errors.ts';

/** `what`: how the message names it, e.g. "--corpus /data". */
export function assertReadableFile(path: string, what: string, hint: string): void {
  if (!existsSync(path)) throw new HatError('FILE_NOT_FOUND', `${what} does not exist`, hint);
  if (statSync(path).isDirectory()) throw new HatError('BAD_OPTION', `${what} is a folder, not a file`, hint);
}

/** A file about to be written: not a folder, and its folder exists. */
export function assertWritableFile(path: string, what: string): void {
  if (existsSync(path) && statSync(path).isDirectory()) {
    throw new HatError('OUTPUT_EXISTS', `${what} is a folder`, 'give a file path');
  }
  const folder = dirname(resolve(path));
  if (!existsSync(folder) || !statSync(folder).isDirectory()) {
    throw new HatError('OUTPUT_EXISTS', `${what}: folder ${folder} does not exist`, 'create it first');
  }
}

/**
 * Writes `data` to `path` whole or not at all: to a file beside it named for this process, then renamed, so a
 * failure (a full disk, a folder in the way) never leaves a half-written file or a stray temporary one. `what`
 * names the file in the error.
 */
export function writeFileWhole(path: string, data: string | Uint8Array, what: string): void {
  const partial = `${path}.partial-${process.pid}`;
  try {
    writeFileSync(partial, data);
    renameSync(partial, path);
  } catch (error) {
    if (existsSync(partial) && !statSync(partial).isDirectory()) rmSync(partial);
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot write ${what}: ${(error as Error).message}`,
      'check that its folder is writable and has space',
    );
  }
}

/** Whether `path` is `folder` or lies inside it (links resolved): what replacing `folder` would delete. */
export function isWithin(path: string, folder: string): boolean {
  const real = (p: string) => (existsSync(p) ? realpathSync(p) : resolve(p));
  const rel = relative(real(folder), real(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
