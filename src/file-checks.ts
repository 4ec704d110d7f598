/**
 * Path checks at the edges, so a folder given for a file (or a file for a folder, or a missing parent) is a
 * one-line HatError naming the option, not an EISDIR / ENOTDIR surfacing as INTERNAL.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
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

/** Whether `path` is `folder` or lies inside it (links resolved): what replacing `folder` would delete. */
export function isWithin(path: string, folder: string): boolean {
  const real = (p: string) => (existsSync(p) ? realpathSync(p) : resolve(p));
  const rel = relative(real(folder), real(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
