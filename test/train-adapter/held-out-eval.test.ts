/**
 * The adapter's held-out evaluation covers every greedy token the full model continued each prompt with, also
 * when a corpus line is shorter than the 16-token evaluation prompt (it skipped those continuations' first tokens).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentReporter } from '../../src/reporter.ts';
import { trainSplitAdapter } from '../../src/train-adapter/train-split.ts';
import { SMALL_LLAMA, makeSmallSplit } from '../helpers/runtime-fixtures.ts';
import { wordLevelTokenizerJson } from '../helpers/word-level-tokenizer.ts';

test('held-out evaluation of short corpus lines covers all their greedy tokens', async () => {
  const { dir, split } = await makeSmallSplit();
  const words = Array.from({ length: SMALL_LLAMA.vocabSize }, (_, i) => `w${i}`);
  const tokenizer = wordLevelTokenizerJson(Object.fromEntries(words.map((w, i) => [w, i])), 'w0');
  writeFileSync(join(split, 'tokenizer.json'), JSON.stringify(tokenizer));
  // 4-word lines (the newline is unknown to this vocabulary: w0); held-out lines are among them.
  const lines = Array.from({ length: 400 }, (_, i) => [1, 2, 3, 4].map((k) => words[(i * 7 + k * 3) % 40]).join(' '));
  const corpus = join(dir, 'corpus.txt');
  writeFileSync(corpus, `${lines.join('\n')}\n`);
  const evalPrompts = 3;
  const evalTokens = 12;
  await trainSplitAdapter(
    {
      splitDir: split,
      corpus,
      selfGenerate: 0, // unused with a corpus
      kind: 'linear',
      epochs: 1,
      lr: 2e-3,
      seq: 16,
      batch: 2,
      maxTokens: 4_000,
      maxSeconds: 30,
      ceWeight: 0.5,
      init: 'random',
      maxDraft: 4,
      evalPrompts,
      evalTokens,
      seed: 1,
    },
    silentReporter,
  );
  const heldOut = JSON.parse(readFileSync(join(split, 'manifest.json'), 'utf8')).adapter.metrics.heldOut;
  assert.equal(heldOut.prompts, evalPrompts);
  assert.equal(heldOut.draftPositions, evalPrompts * evalTokens);
});
