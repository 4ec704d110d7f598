/**
 * The real thing, as a user runs it: `hat serve-cloud` and `hat run-device` as separate processes on the shipped
 * default split, checked against `hat generate` on the unsplit default model; and a device bundle that holds no
 * middle part.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HAT_BIN, spawnCloud, type SpawnedCloud } from '../../src/runtime/cloud/spawn-cloud.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const run = promisify(execFile);
const split = join(repoRoot, 'fixtures', 'default-split');
const model = join(repoRoot, 'fixtures', 'default');
const skip = existsSync(join(split, 'manifest.json')) && existsSync(join(model, 'model.onnx')) ? false : 'SKIPPED: fixtures/default-split or fixtures/default is missing';
const PROMPT = 'And the LORD spake unto Moses, saying';
let cloud: SpawnedCloud;

async function hat(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [HAT_BIN, ...args], { cwd: repoRoot, maxBuffer: 16 << 20 });
}

before(async () => {
  if (!skip) cloud = await spawnCloud(split);
});
after(() => cloud?.stop());

test('run-device (greedy, fp32 wire) writes exactly what hat generate writes on the full model', { skip }, async () => {
  const reference = JSON.parse((await hat(['generate', model, '--prompt', PROMPT, '--max-new-tokens', '48', '--json'])).stdout);
  const device = JSON.parse((await hat(['run-device', split, '--cloud', cloud.url, '--prompt', PROMPT, '--max-new-tokens', '48', '--wire', 'fp32', '--json'])).stdout);
  assert.deepEqual(device.ids, reference.ids);
  assert.equal(device.text, reference.text);
  assert.ok(device.metrics.rounds < device.ids.length, `speculation committed several tokens per round (${device.metrics.tokensPerRound})`);
  for (const key of ['ttftMs', 'rounds', 'tokensPerRound', 'bytesUp', 'bytesDown']) assert.equal(typeof device.metrics[key], 'number', key);
  assert.equal(typeof device.metrics.tbtMs.mean, 'number');
  assert.equal(typeof device.metrics.tbtMs.p90, 'number');
});

test('a device bundle without the middle part runs, over an emulated Wi-Fi link, with chunked prefill', { skip }, async () => {
  const bundle = mkdtempSync(join(tmpdir(), 'hat-device-'));
  for (const name of readdirSync(split)) if (!name.startsWith('middle')) cpSync(join(split, name), join(bundle, name));
  assert.ok(!readdirSync(bundle).some((n) => n.startsWith('middle')));
  const device = JSON.parse((await hat(['run-device', bundle, '--cloud', cloud.url, '--prompt', PROMPT.repeat(6), '--max-new-tokens', '16', '--link', 'wifi', '--chunk', '32', '--json'])).stdout);
  assert.equal(device.ids.length > 0, true);
  assert.ok(device.metrics.chunkSizes.length > 1, `chunks ${device.metrics.chunkSizes}`);
  assert.match(device.link, /EMULATED/);
});

test('streamed text and the metrics table; a wrong cloud address is a one-line error with a non-zero exit', { skip }, async () => {
  const { stdout, stderr } = await hat(['run-device', split, '--cloud', cloud.url, '--prompt', PROMPT, '--max-new-tokens', '12']);
  assert.ok(stdout.startsWith(',') || stdout.length > 10, stdout);
  assert.match(stderr, /tokens\/round/);
  await assert.rejects(hat(['run-device', split, '--cloud', 'ws://127.0.0.1:9', '--prompt', PROMPT]), (error: { code: number; stderr: string }) => {
    assert.equal(error.code, 1);
    assert.equal(error.stderr.trim().split('\n').length, 1);
    assert.match(error.stderr, /^error\[NETWORK\]/);
    return true;
  });
});

test('hat demo runs the whole system from a fresh clone\'s fixtures', { skip }, async () => {
  const { stdout } = await hat(['demo', 'And God said', '--max-new-tokens', '16', '--link', 'none', '--json']);
  const result = JSON.parse(stdout);
  assert.ok(result.ids.length > 0 && result.text.length > 0);
});
