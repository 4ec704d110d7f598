import { test } from 'node:test';
import assert from 'node:assert/strict';
import { budgetWithinCloudContext } from '../../../src/runtime/device/cloud-context.ts';
import { HatError } from '../../../src/errors.ts';

const api = { code: 'CONTEXT_LENGTH', option: 'max_tokens' } as const;

test("a budget is checked against the cloud's context; a default one is lowered to the room it leaves", () => {
  assert.equal(budgetWithinCloudContext(10, { maxTokens: 50, given: true }, undefined, api), 50, 'no limit known');
  assert.equal(budgetWithinCloudContext(10, { maxTokens: 54, given: true }, 64, api), 54, 'exactly at the limit');
  assert.equal(budgetWithinCloudContext(10, { maxTokens: 1014, given: false }, 64, api), 54, 'default: the room');
  assert.throws(
    () => budgetWithinCloudContext(10, { maxTokens: 55, given: true }, 64, api),
    (e: HatError) =>
      e.code === 'CONTEXT_LENGTH' &&
      e.message === 'the cloud serves at most 64 positions per session: the prompt (10 tokens) + 55 to generate = 65' &&
      e.hint === 'lower max_tokens to at most 54, or shorten the prompt',
  );
  // A prompt that fills the cloud's context is refused whatever the budget, default or not.
  for (const given of [true, false]) {
    assert.throws(
      () =>
        budgetWithinCloudContext(64, { maxTokens: 8, given }, 64, {
          code: 'CONTEXT_LIMIT',
          option: '--max-new-tokens',
        }),
      (e: HatError) => e.code === 'CONTEXT_LIMIT' && e.hint === 'shorten the prompt',
    );
  }
});
