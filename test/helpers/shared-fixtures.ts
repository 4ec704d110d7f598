/**
 * Third-party fixtures live in ../shared/fixtures (never copied into this repo). Tests that need them call
 * `sharedFixture` and pass its `skip` to node:test, so a clone without ../shared skips them visibly.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';

export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const sharedFixturesDir = resolve(repoRoot, '..', 'shared', 'fixtures');

export function sharedFixture(...parts: string[]): { path: string; skip: string | false } {
  const path = join(sharedFixturesDir, ...parts);
  return {
    path,
    skip: existsSync(path) ? false : `SKIPPED: shared fixture ${path} is absent (../shared not beside the repo)`,
  };
}
