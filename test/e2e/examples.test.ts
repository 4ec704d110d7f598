/**
 * The README's examples run as written: the files in examples/ are the README's code blocks verbatim, the library
 * example runs on the shipped split, and the OpenAI client example streams from a real `run-device --serve`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { spawnCloud } from '../../src/apps/spawn-cloud.ts';
import { spawnDeviceServer } from '../helpers/openai-device.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const run = promisify(execFile);
const split = join(repoRoot, 'fixtures', 'default-split');
const skip = existsSync(join(split, 'manifest.json')) ? false : 'SKIPPED: fixtures/default-split is missing';
const EXAMPLES = ['examples/library.ts', 'examples/openai-client.ts'];

async function runExample(file: string, env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', file], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return stdout;
}

test('the README shows each example file verbatim', () => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  for (const file of EXAMPLES) {
    const source = readFileSync(join(repoRoot, file), 'utf8');
    assert.ok(blocks.includes(source), `README.md has ${file} as a \`\`\`ts block`);
  }
});

test('examples/library.ts runs: streamed text, a chat answer, its token count and HAT figures', { skip }, async () => {
  const lines = (await runExample('examples/library.ts')).trim().split('\n');
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.ok(lines[0].trim().length > 10 && lines[1].trim().length > 10, lines.join('\n'));
  assert.match(lines[2], /^\d+ tokens \((stop|length)\), [\d.]+ per cloud round, \d+ bytes up$/);
});

test('examples/openai-client.ts streams a chat answer from run-device --serve', { skip }, async () => {
  const cloud = await spawnCloud(split);
  try {
    const device = await spawnDeviceServer(split, cloud.url);
    try {
      const output = await runExample('examples/openai-client.ts', { HAT_BASE_URL: device.baseURL });
      assert.ok(output.trim().length > 10, output);
    } finally {
      await device.stop();
    }
  } finally {
    await cloud.stop();
  }
});
