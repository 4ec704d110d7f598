/**
 * The staging folder's interrupt handling, in a child process (the handler ends the process it runs in).
 * fs/promises is patched so that the interrupt lands at a chosen step of publish(), deterministically.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { tempDirRemovedAtExit } from '../helpers/temp-dir.ts';

const OUTPUT_DIR_MODULE = JSON.stringify(join(repoRoot, 'src', 'split', 'output-dir.ts'));

/** Runs `script` (an ES module, TypeScript imports allowed) in a child process from the repository root. */
function runModule(script: string) {
  return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
}

/**
 * Runs createStaging + publish in a child. Inside the first call of the fs/promises function named, the child
 * either interrupts itself (SIGINT) or that call fails.
 */
function publishWith(step: 'chmod' | 'rename', out: string, event: 'interrupt' | 'failure' = 'interrupt') {
  const script = `
    import fsp from 'node:fs/promises';
    import { syncBuiltinESMExports } from 'node:module';
    import { writeFileSync } from 'node:fs';
    import { setTimeout as delay } from 'node:timers/promises';
    const real = fsp[${JSON.stringify(step)}];
    let interrupted = false;
    fsp[${JSON.stringify(step)}] = async (...args) => {
      if (!interrupted) {
        interrupted = true;
        if (${JSON.stringify(event)} === 'failure') throw Object.assign(new Error('injected'), { code: 'EIO' });
        process.kill(process.pid, 'SIGINT');
        await delay(100); // the signal is handled while this step is in flight
      }
      return real(...args);
    };
    syncBuiltinESMExports();
    const { createStaging } = await import(${OUTPUT_DIR_MODULE});
    const staging = await createStaging(${JSON.stringify(out)}, true);
    writeFileSync(staging.dir + '/manifest.json', '{"new":true}');
    await staging.publish();
    console.log('published without interruption');
  `;
  return runModule(script);
}

for (const step of ['chmod', 'rename'] as const) {
  test(`an interrupt during publish (${step}) ends the process with the output in place and no staging left`, () => {
    const dir = tempDirRemovedAtExit('hat-output-dir-');
    const out = join(dir, 'split');
    const child = publishWith(step, out);
    assert.equal(child.signal, 'SIGINT', `ended by the interrupt (status ${child.status}, ${child.stderr})`);
    assert.deepEqual(
      readdirSync(dir).filter((name) => name !== 'split'),
      [],
    );
    assert.equal(readFileSync(join(out, 'manifest.json'), 'utf8'), '{"new":true}');
  });
}

test('an interrupt while replacing an output (--force) leaves the new output, not the old or a staging folder', () => {
  const dir = tempDirRemovedAtExit('hat-output-dir-');
  const out = join(dir, 'split');
  mkdirSync(out);
  writeFileSync(join(out, 'manifest.json'), '{"old":true}');
  const child = publishWith('rename', out);
  assert.equal(child.signal, 'SIGINT', `ended by the interrupt (status ${child.status}, ${child.stderr})`);
  assert.deepEqual(readdirSync(dir), ['split']);
  assert.equal(readFileSync(join(out, 'manifest.json'), 'utf8'), '{"new":true}');
  assert.ok(existsSync(out));
});

test('a publish that fails leaves the old output in place and removes the staged one', () => {
  const dir = tempDirRemovedAtExit('hat-output-dir-');
  const out = join(dir, 'split');
  mkdirSync(out);
  writeFileSync(join(out, 'manifest.json'), '{"old":true}');
  const child = publishWith('rename', out, 'failure');
  assert.notEqual(child.status, 0);
  assert.match(child.stderr, /injected/);
  assert.deepEqual(readdirSync(dir), ['split']);
  assert.equal(readFileSync(join(out, 'manifest.json'), 'utf8'), '{"old":true}');
});

test('an interrupt the moment the staging folder is created removes it (the handler is in place before it)', () => {
  const dir = tempDirRemovedAtExit('hat-output-dir-');
  const script = `
    import fs from 'node:fs';
    import { syncBuiltinESMExports } from 'node:module';
    const real = fs.mkdtempSync;
    fs.mkdtempSync = (...args) => {
      const made = real(...args);
      process.kill(process.pid, 'SIGINT'); // lands before createStaging's next line runs
      return made;
    };
    syncBuiltinESMExports();
    const { createStaging } = await import(${OUTPUT_DIR_MODULE});
    await createStaging(${JSON.stringify(join(dir, 'split'))}, false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    console.log('not interrupted');
  `;
  const child = runModule(script);
  assert.equal(child.signal, 'SIGINT', `ended by the interrupt (status ${child.status}, ${child.stderr})`);
  assert.deepEqual(readdirSync(dir), []);
});

test('an interrupt while writes still land in the staging folder (ENOTEMPTY) still removes it and ends', () => {
  const dir = tempDirRemovedAtExit('hat-output-dir-');
  const script = `
    import fs from 'node:fs';
    import { syncBuiltinESMExports } from 'node:module';
    const real = fs.rmSync;
    let raced = false;
    // The first removal meets a file a write under way (libuv's threads) created meanwhile, as rmdir would.
    fs.rmSync = (...args) => {
      if (!raced) {
        raced = true;
        throw Object.assign(new Error('ENOTEMPTY: directory not empty'), { code: 'ENOTEMPTY' });
      }
      return real(...args);
    };
    syncBuiltinESMExports();
    const { createStaging } = await import(${OUTPUT_DIR_MODULE});
    const staging = await createStaging(${JSON.stringify(join(dir, 'split'))}, false);
    fs.writeFileSync(staging.dir + '/part.onnx', 'x');
    process.kill(process.pid, 'SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    console.log('not interrupted');
  `;
  const child = runModule(script);
  assert.equal(child.signal, 'SIGINT', `ended by the interrupt (status ${child.status}, ${child.stderr})`);
  assert.deepEqual(readdirSync(dir), []);
});
