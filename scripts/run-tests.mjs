// Node 20's `--test` does not expand globs or find .ts files, so list them here and hand them over.
// Usage: npm test [-- <substring filter>...]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function findTests(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return findTests(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}

const filters = process.argv.slice(2);
const files = findTests('test')
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}
// A test that leaks a server or waits on a promise that never settles fails after 10 minutes instead of hanging the
// run (and CI) for good. Node 20 applies it to each file as a whole too (the whole suite takes about 7 minutes).
// --test-timeout came in Node 20.11 / 21.2; older Nodes run without it.
const [major, minor] = process.versions.node.split('.').map(Number);
const timeout =
  major > 21 || (major === 21 && minor >= 2) || (major === 20 && minor >= 11) ? ['--test-timeout=600000'] : [];
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', ...timeout, ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
