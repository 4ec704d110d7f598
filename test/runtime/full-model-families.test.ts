/**
 * `hat generate` feeds every model in the integer types it declares and only the inputs it declares: the torch
 * exports of the families users bring (BLOOM and Gemma-style included) and a model-builder layout (int32 ids and
 * mask, no position_ids, GroupQueryAttention) run, and their greedy choice equals torch's own logits.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { silentReporter } from '../../src/reporter.ts';
import { HAT_BIN } from '../../src/apps/spawn-cloud.ts';
import { ComposedModel } from '../../src/runtime/composed-model.ts';
import { OnnxCausalLm } from '../../src/runtime/full-model.ts';
import { generateTokens } from '../../src/runtime/generate.ts';
import { argmax } from '../../src/runtime/sampling.ts';
import { splitModel } from '../../src/split/split.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';
import { writeGenaiDecoder } from '../split/genai-decoder.ts';

const run = promisify(execFile);
const families = join(repoRoot, 'test', 'fixtures', 'families');
const scratch = mkdtempSync(join(tmpdir(), 'hat-full-families-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

for (const family of ['bloom', 'gemma', 'phi', 'mistral', 'gpt-neox', 'qwen2']) {
  test(`hat generate runs the ${family} export; its first greedy token is torch's argmax`, async () => {
    const reference = JSON.parse(readFileSync(join(families, family, 'reference.json'), 'utf8')) as {
      ids: number[];
      logits: number[][];
    };
    const { stdout } = await run(process.execPath, [
      HAT_BIN,
      'generate',
      join(families, family),
      '--prompt-ids',
      reference.ids.join(','),
      '--max-new-tokens',
      '1',
      '--json',
    ]);
    const result = JSON.parse(stdout);
    assert.deepEqual(result.promptIds, reference.ids);
    assert.deepEqual(result.ids, [argmax(reference.logits.at(-1)!)]);
  });
}

test(
  'a model-builder layout (int32 ids and mask, no position_ids) generates, ' + 'equal to its composed split',
  async () => {
    const model = await writeGenaiDecoder(scratch);
    const prompt = [5, 17, 42, 7, 30];
    const full = await OnnxCausalLm.open(model);
    const expected = (await generateTokens(full, prompt, { maxNewTokens: 8, sampler: argmax })).ids;
    await full.release();
    const split = await splitModel({ model, out: join(scratch, 'split') }, silentReporter);
    const composed = await ComposedModel.open(split.dir, split.manifest);
    const viaParts = (await generateTokens(composed, prompt, { maxNewTokens: 8, sampler: argmax })).ids;
    assert.deepEqual(viaParts, expected);
    assert.equal(expected.length, 8);
  },
);
