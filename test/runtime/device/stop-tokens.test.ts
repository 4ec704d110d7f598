/**
 * Chat models end a turn with a token other than eos_token (Qwen2.5-Instruct: generation_config.json lists
 * [<|im_end|>, <|endoftext|>]; Llama-3-Instruct: [<|end_of_text|>, <|eot_id|>]). A small random Llama whose
 * generation_config.json names, besides its eos_token, an id its greedy output reaches: `hat generate` and the
 * device's API both stop there, the stop token kept, as on the model's own eos.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatDevice } from '../../../src/api/hat-device.ts';
import { generateText } from '../../../src/apps/generate-text.ts';
import { writeLlamaOnnx } from '../../../src/models/llama-onnx.ts';
import { randomWeights } from '../../../src/models/weights.ts';
import { silentReporter } from '../../../src/reporter.ts';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { argmax } from '../../../src/runtime/sampling.ts';
import type { SplitManifest } from '../../../src/split/manifest.ts';
import { splitModel } from '../../../src/split/split.ts';
import { addIdentityAdapter, serveSplit, SMALL_LLAMA } from '../../helpers/runtime-fixtures.ts';
import { wordLevelTokenizerJson } from '../../helpers/word-level-tokenizer.ts';

const prompt = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17];
const NEW = 24;
let work: string;
let modelDir: string;
let split: string;
let server: CloudServer;
let port: number;
let reference: number[];
/** The turn-ending id generation_config.json adds: the first greedy token (after two) not seen before. */
let turnEnd: number;
/** eos_token (tokenizer_config.json, config.json): an id the greedy output never reaches. */
let eos: number;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'hat-stop-tokens-'));
  modelDir = join(work, 'model');
  mkdirSync(modelDir);
  const model = join(modelDir, 'model.onnx');
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 3, std: 0.3 }), model);
  const full = await OnnxCausalLm.open(model);
  reference = (await generateTokens(full, prompt, { maxNewTokens: NEW, sampler: argmax })).ids;
  await full.release();
  const at = reference.findIndex((id, i) => i >= 2 && !reference.slice(0, i).includes(id));
  assert.ok(at > 0 && at < NEW - 2, `greedy output ${reference.join(' ')} has a fresh token to stop on`);
  turnEnd = reference[at];
  eos = [...Array(SMALL_LLAMA.vocabSize).keys()].reverse().find((id) => !reference.includes(id))!;

  const words = Array.from({ length: SMALL_LLAMA.vocabSize }, (_, i) => `w${i}`);
  const json = (name: string, value: unknown) => writeFileSync(join(modelDir, name), JSON.stringify(value));
  json('tokenizer.json', wordLevelTokenizerJson(Object.fromEntries(words.map((w, i) => [w, i])), 'w0'));
  json('tokenizer_config.json', { bos_token: 'w1', eos_token: `w${eos}` });
  json('config.json', { vocab_size: SMALL_LLAMA.vocabSize, bos_token_id: 1, eos_token_id: eos });
  json('generation_config.json', { bos_token_id: 1, eos_token_id: [eos, turnEnd] });

  split = join(work, 'split');
  await splitModel({ model, out: split }, silentReporter);
  addIdentityAdapter(split);
  ({ server, port } = await serveSplit(split, { maxSessions: 2, maxTokensPerFrame: 512, maxContext: 512 }));
});
after(async () => {
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
});

const expected = () => reference.slice(0, reference.indexOf(turnEnd) + 1);

test('hat split carries generation_config.json into the split directory (a device-side file)', () => {
  assert.ok(existsSync(join(split, 'generation_config.json')));
  const manifest = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8')) as SplitManifest;
  assert.ok(manifest.extraFiles?.includes('generation_config.json'), String(manifest.extraFiles));
});

test('hat generate stops on the id generation_config.json adds', async () => {
  const out = await generateText(modelDir, { ids: prompt }, { maxNewTokens: NEW, temperature: 0, topP: 1, seed: 0 });
  assert.deepEqual(out.ids, expected());
  assert.equal(out.stopReason, 'stop-token');
});

test("the device's API stops there too, with finish reason 'stop' (drafting, and one token per round)", async () => {
  for (const speculative of [true, false]) {
    const device = await HatDevice.open(split, { cloud: `ws://127.0.0.1:${port}`, wire: 'fp32', speculative });
    try {
      const result = await device.generate({ ids: prompt }, { maxTokens: NEW, temperature: 0 });
      assert.deepEqual(result.ids, expected(), `speculative: ${speculative}`);
      assert.equal(result.finishReason, 'stop');
      // The stop token is text like any other (word-level pieces, each after a space).
      assert.equal(
        result.text,
        expected().reduce((text, id) => `${text} w${id}`, ''),
      );
    } finally {
      await device.close();
    }
  }
});
