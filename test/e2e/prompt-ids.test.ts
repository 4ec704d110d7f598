/**
 * Models without a tokenizer (third-party or random-weight exports): `--prompt-ids` drives `hat generate` and
 * `hat run-device`, an empty prompt starts from the BOS id that config.json names, and `--json` prints ids.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { silentReporter } from '../../src/reporter.ts';
import { OnnxCausalLm } from '../../src/runtime/full-model.ts';
import { generateTokens } from '../../src/runtime/generate.ts';
import { argmax } from '../../src/runtime/sampling.ts';
import { HAT_BIN, spawnCloud, type SpawnedCloud } from '../../src/apps/spawn-cloud.ts';
import { splitModel } from '../../src/split/split.ts';
import { writeTinyDecoder } from '../split/tiny-decoders.ts';

const run = promisify(execFile);
const hat = (args: string[]) => run(process.execPath, [HAT_BIN, ...args], { maxBuffer: 16 << 20 });
const root = mkdtempSync(join(tmpdir(), 'hat-prompt-ids-'));
const withConfig = join(root, 'with-config');
const bare = join(root, 'bare');
const BOS = 7;
let splitDir: string;
let cloud: SpawnedCloud;

before(async () => {
  mkdirSync(withConfig);
  mkdirSync(bare);
  await writeTinyDecoder(join(withConfig, 'model.onnx'), { seed: 3 });
  writeFileSync(join(withConfig, 'config.json'), JSON.stringify({ bos_token_id: BOS, eos_token_id: 49 }));
  await writeTinyDecoder(join(bare, 'model.onnx'), { seed: 3 });
  splitDir = (await splitModel({ model: join(withConfig, 'model.onnx'), out: join(root, 'split') }, silentReporter))
    .dir;
  cloud = await spawnCloud(splitDir);
});
after(async () => {
  await cloud?.stop();
  rmSync(root, { recursive: true, force: true });
});

/** Greedy ids from the model run directly, the reference both commands must reproduce. */
async function greedyReference(model: string, prompt: number[], count: number, stop: number[]): Promise<number[]> {
  const lm = await OnnxCausalLm.open(model);
  try {
    return (await generateTokens(lm, prompt, { maxNewTokens: count, sampler: argmax, stopTokenIds: stop })).ids;
  } finally {
    await lm.release();
  }
}

test(
  'hat generate --prompt-ids runs a model that has no tokenizer; ' + '--json prints prompt and generated ids',
  async () => {
    const { stdout } = await hat(['generate', bare, '--prompt-ids', '3, 5,11', '--max-new-tokens', '6', '--json']);
    const result = JSON.parse(stdout);
    assert.deepEqual(result.promptIds, [3, 5, 11]);
    assert.deepEqual(result.ids, await greedyReference(join(bare, 'model.onnx'), [3, 5, 11], 6, []));
    assert.equal(result.text, undefined);
    const plain = await hat(['generate', bare, '--prompt-ids', '3,5,11', '--max-new-tokens', '6']);
    assert.equal(plain.stdout, `${result.ids.join(',')}\n`);
  },
);

test('an empty prompt starts from the BOS id config.json names', async () => {
  const { stdout } = await hat(['generate', withConfig, '--prompt-ids', '', '--max-new-tokens', '4', '--json']);
  const result = JSON.parse(stdout);
  assert.deepEqual(result.promptIds, [BOS]);
  assert.deepEqual(result.ids, await greedyReference(join(withConfig, 'model.onnx'), [BOS], 4, [49]));
});

test('run-device --prompt-ids on a split without a tokenizer equals hat generate', async () => {
  const reference = JSON.parse(
    (await hat(['generate', withConfig, '--prompt-ids', '1,2,3,4', '--max-new-tokens', '8', '--json'])).stdout,
  );
  const device = JSON.parse(
    (
      await hat([
        'run-device',
        splitDir,
        '--cloud',
        cloud.url,
        '--prompt-ids',
        '1,2,3,4',
        '--max-new-tokens',
        '8',
        '--no-draft',
        '--wire',
        'fp32',
        '--json',
      ])
    ).stdout,
  );
  assert.deepEqual(device.promptIds, [1, 2, 3, 4]);
  assert.deepEqual(device.ids, reference.ids);
  assert.equal(reference.ids.length, 8);
});

async function assertOneLineError(args: string[], pattern: RegExp): Promise<void> {
  await assert.rejects(hat(args), (error: { code: number; stderr: string }) => {
    assert.equal(error.code, 1);
    assert.equal(error.stderr.trim().split('\n').length, 1, error.stderr);
    assert.match(error.stderr, pattern);
    return true;
  });
}

test(
  'bad prompts are one-line errors: no BOS anywhere, ' + 'text without a tokenizer, bad or out-of-vocabulary ids',
  async () => {
    await assertOneLineError(
      ['generate', bare, '--max-new-tokens', '2'],
      /^error\[BAD_OPTION\]: an empty prompt starts from the BOS token/,
    );
    await assertOneLineError(
      ['generate', bare, '--prompt', 'hello'],
      /^error\[FILE_NOT_FOUND\]: .*no tokenizer\.json.*--prompt-ids/,
    );
    await assertOneLineError(
      ['generate', bare, '--prompt-ids', '1,x'],
      /^error\[BAD_OPTION\]: --prompt-ids: 'x' is not a token id/,
    );
    await assertOneLineError(
      ['generate', bare, '--prompt-ids', '1,999'],
      /^error\[BAD_OPTION\]: prompt token id 999 is outside the vocabulary \(50 tokens\)/,
    );
    await assertOneLineError(
      ['generate', bare, '--prompt', 'a', '--prompt-ids', '1'],
      /^error\[BAD_OPTION\]: --prompt and --prompt-ids were both given/,
    );
  },
);
