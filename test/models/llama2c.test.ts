import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HatError } from '../../src/errors.ts';
import { importLlama2c } from '../../src/models/import-llama2c.ts';
import { openLlama2cCheckpoint, readLlama2cCheckpoint } from '../../src/models/llama2c.ts';
import { llama2cTokenizerJson, readLlama2cTokenizer } from '../../src/models/llama2c-tokenizer.ts';
import { referenceForward } from '../../src/models/reference.ts';
import { OnnxCausalLm } from '../../src/runtime/full-model.ts';
import { generateTokens } from '../../src/runtime/generate.ts';
import { argmax } from '../../src/runtime/sampling.ts';
import { loadTokenizer } from '../../src/runtime/tokenizer.ts';
import { llama2cEncode, writeLlama2cCheckpoint, writeLlama2cTokenizer } from '../helpers/llama2c-files.ts';
import { sharedFixture } from '../helpers/shared-fixtures.ts';

const work = mkdtempSync(join(tmpdir(), 'hat-llama2c-'));
after(() => rmSync(work, { recursive: true, force: true }));

const TEXTS = [
  'Once upon a time, there was a little girl named Lily.',
  'the cat sat',
  '  two  spaces ',
  'naïve café 🐶\nnew line',
  'x',
];
const PIECES = [
  ' ',
  'e',
  't',
  'h',
  'a',
  's',
  ' t',
  'he',
  ' the',
  'at',
  ' c',
  ' cat',
  ' s',
  ' sat',
  'i',
  'n',
  'in',
  'o',
  'on',
  'ce',
  'n ',
  'w',
];

function tinyCheckpoint(shared: boolean) {
  const tokenizerPath = join(work, 'tok.bin');
  const vocab = writeLlama2cTokenizer(tokenizerPath, PIECES);
  const checkpointPath = join(work, shared ? 'shared.bin' : 'separate.bin');
  const raw = writeLlama2cCheckpoint(checkpointPath, {
    dim: 16,
    hidden: 24,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    vocab,
    seqLen: 32,
    sharedClassifier: shared,
  });
  return { tokenizerPath, checkpointPath, vocab, raw };
}

test('a legacy checkpoint is read with its classifier shared or separate', () => {
  for (const shared of [true, false]) {
    const { checkpointPath, vocab, raw } = tinyCheckpoint(shared);
    const { config, weights } = readLlama2cCheckpoint(checkpointPath);
    assert.equal(config.tiedEmbeddings, shared);
    assert.equal(config.kvHeads, 2);
    assert.deepEqual(weights.get('model.embed_tokens.weight')!.subarray(0, 4), raw.subarray(0, 4));
    assert.equal(weights.has('lm_head.weight'), !shared);
    if (!shared) {
      // wcls is the last [vocab, dim] block, PyTorch [out, in]; hat stores [in, out].
      const wcls = raw.subarray(raw.length - vocab * 16);
      assert.equal(weights.get('lm_head.weight')![1 * vocab + 5], wcls[5 * 16 + 1]);
    }
  }
});

test('imported model: ONNX logits match the reference forward on the converted weights', async () => {
  const { checkpointPath, tokenizerPath } = tinyCheckpoint(false);
  const { dir, config } = await importLlama2c(checkpointPath, tokenizerPath, join(work, 'separate-model'));
  const model = await OnnxCausalLm.open(join(dir, 'model.onnx'));
  const ids = [1, 270, 280, 5, 90];
  const actual = (await model.step(ids)).data;
  const expected = referenceForward(config, readLlama2cCheckpoint(checkpointPath).weights, ids);
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
  assert.ok(diff < 1e-4, `max diff ${diff}`);
  await model.release();
});

test('converted tokenizer.json encodes like llama2.c and decodes back to the text', async () => {
  const { checkpointPath, tokenizerPath, vocab } = tinyCheckpoint(true);
  const { dir } = await importLlama2c(checkpointPath, tokenizerPath, join(work, 'shared-model'));
  const tokenizer = loadTokenizer({
    tokenizer: join(dir, 'tokenizer.json'),
    tokenizerConfig: join(dir, 'tokenizer_config.json'),
  });
  assert.equal(tokenizer.bosTokenId, 1);
  assert.equal(tokenizer.eosTokenId, 2);
  const { pieces, scores } = readLlama2cTokenizer(tokenizerPath, vocab);
  for (const text of TEXTS) {
    const ids = tokenizer.encode(text);
    assert.deepEqual(ids, llama2cEncode(pieces, scores, text), `encoding of ${JSON.stringify(text)}`);
    assert.equal(tokenizer.decode(ids), text, 'decoding drops the dummy-prefix space and nothing else');
  }
});

test('bad inputs fail with one clear error', () => {
  const { checkpointPath, tokenizerPath, vocab } = tinyCheckpoint(true);
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return (e as HatError).code;
    }
    return 'no error';
  };
  assert.equal(
    code(() => readLlama2cCheckpoint(join(work, 'missing.bin'))),
    'FILE_NOT_FOUND',
  );
  const truncated = join(work, 'truncated.bin');
  writeFileSync(truncated, readFileSync(checkpointPath));
  truncateSync(truncated, 5000);
  assert.equal(
    code(() => readLlama2cCheckpoint(truncated)),
    'BAD_CHECKPOINT',
  );
  assert.equal(
    code(() => readLlama2cCheckpoint(tokenizerPath)),
    'BAD_CHECKPOINT',
  );
  assert.equal(
    code(() => readLlama2cTokenizer(tokenizerPath, vocab + 5)),
    'BAD_CHECKPOINT',
  );
  assert.equal(
    code(() => readLlama2cTokenizer(checkpointPath, vocab)),
    'BAD_CHECKPOINT',
  );
});

const stories = sharedFixture('llama2c-stories260k');
const GOLDEN = (
  '403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 ' +
  '401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352'
)
  .split(' ')
  .map(Number);

test(
  'stories260K imported from llama2.c reproduces the 40 golden greedy ids after BOS',
  { skip: stories.skip },
  async () => {
    const { dir } = await importLlama2c(
      join(stories.path, 'stories260K.bin'),
      join(stories.path, 'tok512.bin'),
      join(work, 'stories'),
    );
    const model = await OnnxCausalLm.open(join(dir, 'model.onnx'));
    const first = await model.step([1]);
    assert.equal(argmax(first.data), 403);
    assert.ok(Math.abs(first.data[403] - 17.02) < 0.01, `first-step max logit ${first.data[403]}`);
    model.truncate(0);
    const result = await generateTokens(model, [1], { maxNewTokens: 40, sampler: argmax, stopTokenIds: [2] });
    assert.deepEqual(result.ids, GOLDEN);
    const tokenizer = loadTokenizer({
      tokenizer: join(dir, 'tokenizer.json'),
      tokenizerConfig: join(dir, 'tokenizer_config.json'),
    });
    assert.match(
      tokenizer.decode(result.ids),
      /^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\./,
    );
    const { pieces, scores } = readLlama2cTokenizer(join(stories.path, 'tok512.bin'), 512);
    for (const text of TEXTS)
      assert.deepEqual(
        tokenizer.encode(text),
        llama2cEncode(pieces, scores, text),
        `encoding of ${JSON.stringify(text)}`,
      );
    await model.release();
  },
);

test('pieces named like Object.prototype members keep their ids (the vocabulary was a plain object)', () => {
  const names = ['toString', 'constructor', 'valueOf', '__proto__', 'hasOwnProperty'];
  const path = join(work, 'prototype-tok.bin');
  const vocab = writeLlama2cTokenizer(path, names);
  const vocabulary = readLlama2cTokenizer(path, vocab);
  const first = vocab - names.length;
  assert.deepEqual(vocabulary.pieces.slice(first), names);
  // Through JSON, as the file is read back.
  const json = JSON.parse(JSON.stringify(llama2cTokenizerJson(vocabulary)));
  names.forEach((name, i) => assert.equal(Object.hasOwn(json.model.vocab, name) && json.model.vocab[name], first + i));
  assert.equal(Object.keys(json.model.vocab).length, vocab);
});

test('a checkpoint past 4 GiB is checked from its header and read tensor by tensor, never whole', () => {
  // Sparse: a valid header and the size it asks for, without the disk. It was read into one Buffer, which
  // fails past 4 GiB with "size out of range" (INTERNAL).
  const c = { dim: 256, hidden: 768, layers: 1300, heads: 4, kvHeads: 4, vocab: 256, seqLen: 16 };
  const headDim = c.dim / c.heads;
  const floats =
    c.vocab * c.dim + c.layers * (2 * c.dim + 4 * c.dim * c.dim + 3 * c.hidden * c.dim) + c.dim + c.seqLen * headDim;
  const size = 28 + floats * 4;
  assert.ok(size > 2 ** 32);
  const path = join(work, 'sparse.bin');
  const header = Int32Array.of(c.dim, c.hidden, c.layers, c.heads, c.kvHeads, c.vocab, c.seqLen);
  writeFileSync(path, Buffer.from(header.buffer));
  truncateSync(path, size);
  const held = process.memoryUsage().arrayBuffers;
  const checkpoint = openLlama2cCheckpoint(path);
  try {
    assert.equal(checkpoint.config.layers, 1300);
    const spec = { name: 'model.layers.1299.mlp.down_proj.weight', dims: [c.hidden, c.dim], kind: 'matrix' as const };
    const [tensor] = checkpoint.source(spec);
    assert.equal(tensor.length, c.hidden * c.dim);
    assert.ok(process.memoryUsage().arrayBuffers - held < 64 * 2 ** 20, 'one tensor in memory, not the file');
  } finally {
    checkpoint.close();
  }
  // A size that does not match the header is refused from the header alone.
  truncateSync(path, size - 4);
  assert.throws(
    () => readLlama2cCheckpoint(path),
    (error: unknown) =>
      error instanceof HatError &&
      error.code === 'BAD_CHECKPOINT' &&
      /holds \d+ bytes but its header .* needs \d+/.test(error.message) &&
      /truncated/.test(error.hint ?? ''),
  );
  rmSync(path);
});
