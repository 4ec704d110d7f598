import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatTemplate, loadChatTemplate } from '../../src/api/chat-template.ts';
import { readManifest, splitTokenizer } from '../../src/runtime/split-dir.ts';
import { isHatError } from '../../src/errors.ts';
import { repoRoot } from '../helpers/shared-fixtures.ts';

const defaultSplit = join(repoRoot, 'fixtures', 'default-split');

function dirWith(config: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'hat-template-'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

test("the default model's template: one verse per message, the generation prompt opens the next verse", () => {
  for (const dir of [defaultSplit, join(repoRoot, 'fixtures', 'default')]) {
    const template = loadChatTemplate(dir);
    assert.ok(template, `${dir} has a chat template`);
    const messages = [
      { role: 'system', content: 'Blessed are the meek' },
      { role: 'user', content: '  In the beginning\n' },
    ];
    const verses = '<|bos|>Blessed are the meek<|eos|><|bos|>In the beginning<|eos|>';
    assert.equal(template.render(messages), `${verses}<|bos|>`);
    assert.equal(template.render(messages, { addGenerationPrompt: false }), verses);
  }
  // Written as text, the special tokens become the tokenizer's special ids (the template adds BOS itself).
  const tokenizer = splitTokenizer(defaultSplit, readManifest(defaultSplit));
  const prompt = loadChatTemplate(defaultSplit)!.render([{ role: 'user', content: 'And God said' }]);
  const ids = tokenizer.encode(prompt, false);
  assert.deepEqual(ids, [0, ...tokenizer.encode('And God said', false), 1, 0]);
});

test('special tokens from tokenizer_config.json (strings or AddedToken objects) reach the template', () => {
  const dir = dirWith({
    bos_token: { content: '<s>', lstrip: false },
    eos_token: '</s>',
    chat_template:
      '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}' +
      '{% if add_generation_prompt %}[assistant] {% endif %}',
  });
  assert.equal(loadChatTemplate(dir)!.render([{ role: 'user', content: 'hi' }]), '<s>[user] hi</s>[assistant] ');
});

test('named templates: the one called default is used', () => {
  const dir = dirWith({
    chat_template: [
      { name: 'tool_use', template: 'tools' },
      { name: 'default', template: 'plain' },
    ],
  });
  assert.equal(loadChatTemplate(dir)!.render([]), 'plain');
});

test('no template: undefined; a template that refuses the messages: BAD_OPTION with its reason', () => {
  assert.equal(loadChatTemplate(dirWith({ bos_token: '<s>' })), undefined);
  assert.equal(loadChatTemplate(mkdtempSync(join(tmpdir(), 'hat-template-'))), undefined);
  const strict = chatTemplate(
    '{% if messages[0].role != "user" %}' +
      '{{ raise_exception("Conversations must start with a user message") }}{% endif %}ok',
  );
  assert.equal(strict.render([{ role: 'user', content: 'x' }]), 'ok');
  assert.throws(
    () => strict.render([{ role: 'assistant', content: 'x' }]),
    (error: unknown) => {
      assert.ok(isHatError(error) && error.code === 'BAD_OPTION');
      assert.match(error.message, /must start with a user message/);
      return true;
    },
  );
  const unparsable = (error: unknown) => isHatError(error) && error.code === 'BAD_CHECKPOINT';
  assert.throws(() => chatTemplate('{% for %}'), unparsable);
});
