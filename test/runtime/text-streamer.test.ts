import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { continuationText, loadTokenizer, textStreamer } from '../../src/runtime/tokenizer.ts';
import { wordLevelTokenizerJson } from '../helpers/word-level-tokenizer.ts';

function wordLevelTokenizer() {
  const dir = mkdtempSync(join(tmpdir(), 'hat-tok-'));
  const vocab = { '<unk>': 0, hello: 1, world: 2, again: 3 };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(wordLevelTokenizerJson(vocab, '<unk>')));
  return loadTokenizer({ tokenizer: join(dir, 'tokenizer.json') });
}

test('decoding nothing gives empty text (a stream that ends before any token used to crash)', () => {
  const tokenizer = wordLevelTokenizer();
  assert.equal(tokenizer.decode([]), '');
  assert.equal(textStreamer(tokenizer).flush(), '');
  assert.equal(continuationText(tokenizer, [], []), '');
});

test("the streamer emits each token's text once", () => {
  const tokenizer = wordLevelTokenizer();
  const streamer = textStreamer(tokenizer, tokenizer.encode('hello'));
  const pieces = tokenizer.encode('world again').map((id) => streamer.push(id));
  assert.equal(
    pieces.join('') + streamer.flush(),
    continuationText(tokenizer, tokenizer.encode('hello'), tokenizer.encode('world again')),
  );
});

test('a long stream (several decode windows) emits exactly the text of the whole continuation', () => {
  const tokenizer = loadTokenizer({
    tokenizer: new URL('../../fixtures/default/tokenizer.json', import.meta.url).pathname,
  });
  const passage = 'And God said, Let there be light: and there was light. Ünïcödé — “quotes” ';
  const ids = tokenizer.encode(passage.repeat(12));
  const context = ids.slice(0, 20),
    generated = ids.slice(20);
  assert.equal(generated.length, 462); // 14 windows of 32 tokens and a partial one
  const streamer = textStreamer(tokenizer, context);
  const text = generated.map((id) => streamer.push(id)).join('') + streamer.flush();
  assert.equal(text, continuationText(tokenizer, context, generated));
  // Several ids at a time, as a speculative round commits them.
  const batched = textStreamer(tokenizer, context);
  let out = '';
  for (let i = 0; i < generated.length; i += 5) out += batched.push(...generated.slice(i, i + 5));
  assert.equal(out + batched.flush(), continuationText(tokenizer, context, generated));
});

test('streamed text equals the final text when decoding would tidy spaces (" ," used to lose the comma)', () => {
  // The default tokenizer has a lone "Ġ" but no "Ġ,": "light ," is "light", "Ġ", ",". A decode that applies
  // clean_up_tokenization_spaces turns "light ," into "light," once the comma arrives, after "light " was sent.
  const fixture = (name: string) => new URL(`../../fixtures/default/${name}`, import.meta.url).pathname;
  const tokenizer = loadTokenizer({
    tokenizer: fixture('tokenizer.json'),
    tokenizerConfig: fixture('tokenizer_config.json'),
    config: fixture('config.json'),
  });
  for (const passage of ['And there was light , and it was good', "the Lord 's house", 'let there be light .']) {
    const ids = tokenizer.encode(passage, false);
    const context = ids.slice(0, 1),
      generated = ids.slice(1);
    const streamer = textStreamer(tokenizer, context);
    const streamed = generated.map((id) => streamer.push(id)).join('') + streamer.flush();
    assert.equal(streamed, continuationText(tokenizer, context, generated), passage);
    // The text is what the model wrote, not a tidied version of it.
    assert.equal(tokenizer.decode(ids), passage);
  }
});

test('a decoder that rewrites text already streamed loses no characters', () => {
  const fixture = new URL('../../fixtures/default/tokenizer.json', import.meta.url).pathname;
  const plain = loadTokenizer({ tokenizer: fixture });
  // A TextTokenizer of another make that tidies spaces as transformers' clean_up_tokenization_spaces does.
  const tidying = { ...plain, decode: (ids: readonly number[]) => plain.decode(ids).replace(/ ([,.])/g, '$1') };
  const ids = plain.encode('And there was light , and it was good .', false);
  const streamer = textStreamer(tidying, ids.slice(0, 1));
  const streamed =
    ids
      .slice(1)
      .map((id) => streamer.push(id))
      .join('') + streamer.flush();
  assert.equal(streamed, ' there was light , and it was good .');
});
