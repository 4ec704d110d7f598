// Temporary folders for fixtures that tests share across a file (a split made in `before`, used by every test):
// removed when the test file's process exits, not when one test ends, so a later test may still use them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

function removeAll(): void {
  for (const dir of made.splice(0)) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort at exit: a folder that cannot be removed is left, as before.
    }
  }
}

/** A new folder under the OS's temp dir (`prefix` + random suffix), removed when this process exits. */
export function tempDirRemovedAtExit(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (made.length === 0) process.once('exit', removeAll);
  made.push(dir);
  return dir;
}
