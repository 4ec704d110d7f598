import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

test('tempDirRemovedAtExit: the folders outlive the code that made them and are gone once the process exits', () => {
  const helper = new URL('./temp-dir.ts', import.meta.url).href;
  const script =
    `const { tempDirRemovedAtExit } = await import(${JSON.stringify(helper)});` +
    `const fs = await import('node:fs');` +
    `const dirs = [tempDirRemovedAtExit('hat-temp-a-'), tempDirRemovedAtExit('hat-temp-b-')];` +
    `fs.writeFileSync(dirs[0] + '/file', 'x');` +
    `await new Promise((resolve) => setTimeout(resolve, 20));` +
    `if (!dirs.every((d) => fs.existsSync(d))) throw new Error('removed early');` +
    `console.log(JSON.stringify(dirs));`;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const dirs = JSON.parse(run.stdout) as string[];
  assert.equal(dirs.length, 2);
  for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} is left`);
});
