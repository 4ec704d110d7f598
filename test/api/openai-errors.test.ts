import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, fromError, fromZodError, paramName } from '../../src/api/openai/errors.ts';
import { chatRequestSchema, completionPrompt, checkSupported, messageText } from '../../src/api/openai/schemas.ts';
import { HatError } from '../../src/errors.ts';

const zodError = (body: unknown) => {
  const parsed = chatRequestSchema.safeParse(body);
  assert.ok(!parsed.success);
  return fromZodError(parsed.error, body);
};

test('parameters are named as OpenAI names them', () => {
  assert.equal(paramName(['messages', 0, 'content']), 'messages[0].content');
  assert.equal(paramName(['stream_options', 'include_usage']), 'stream_options.include_usage');
});

test('zod problems become invalid_type / invalid_value / missing_required_parameter', () => {
  const messages = [{ role: 'user', content: 'x' }];
  assert.deepEqual(zodError({ model: 'm', messages, max_tokens: '3' }).body.error, {
    message: "Invalid type for 'max_tokens': expected number, received string.",
    type: 'invalid_request_error',
    param: 'max_tokens',
    code: 'invalid_type',
  });
  assert.equal(zodError({ model: 'm', messages, top_p: 2 }).code, 'invalid_value');
  assert.equal(zodError({ model: 'm', messages: [{ role: 'wizard', content: 'x' }] }).param, 'messages[0].role');
  const missing = zodError({ messages });
  assert.equal(missing.code, 'missing_required_parameter');
  assert.equal(missing.message, "Missing required parameter: 'model'.");
  // Unknown fields are accepted.
  assert.ok(chatRequestSchema.safeParse({ model: 'm', messages, frequency_penalty: 0, metadata: {} }).success);
});

test('device errors map to statuses: 400, 429 and 503 with Retry-After, 502 and 500 with x-should-retry: false', () => {
  const status = (error: unknown) => fromError(error, 'prompt');
  assert.deepEqual(
    [status(new HatError('BAD_OPTION', 'x')).status, status(new HatError('BAD_OPTION', 'x')).code],
    [
      400,
      'bad_option', // it was null: the one HatError code the API dropped
    ],
  );
  assert.equal(status(new HatError('CONTEXT_LENGTH', 'x')).code, 'context_length_exceeded');
  assert.equal(status(new HatError('NO_CHAT_TEMPLATE', 'x')).param, 'messages');
  const busy = status(new HatError('BUSY', 'x'));
  assert.deepEqual([busy.status, busy.headers['retry-after']], [429, '1']);
  const cloud = status(new HatError('NETWORK', 'cannot reach the cloud at ws://h:1: ECONNREFUSED', 'check it'));
  assert.deepEqual([cloud.status, cloud.code], [503, 'cloud_unreachable']);
  assert.equal(cloud.message, 'cannot reach the cloud at ws://h:1: ECONNREFUSED — check it');
  assert.equal(cloud.headers['retry-after'], '1');
  // Retryable cloud codes (ERROR_TABLE) are 503 with Retry-After; the cloud's CONTEXT_LIMIT is the client's 400;
  // a configuration the cloud refuses is 502 and, like other non-retryable failures, says x-should-retry: false.
  for (const code of ['SESSION_LIMIT', 'GOING_AWAY', 'IDLE_TIMEOUT'] as const) {
    const full = status(new HatError(code, 'x', 'later'));
    assert.deepEqual([full.status, full.code, full.headers['retry-after']], [503, code.toLowerCase(), '1'], code);
  }
  const limit = status(new HatError('CONTEXT_LIMIT', 'x'));
  assert.deepEqual([limit.status, limit.code, limit.param], [400, 'context_length_exceeded', 'prompt']);
  for (const code of ['UNAUTHORIZED', 'MANIFEST_MISMATCH'] as const) {
    const refused = status(new HatError(code, 'x'));
    assert.deepEqual([refused.status, refused.headers['x-should-retry']], [502, 'false'], code);
  }
  assert.deepEqual(status(new HatError('RUN_FAILED', 'x')).headers, { 'x-should-retry': 'false' });
  assert.equal(status(new Error('boom\nstack')).status, 500);
  assert.equal(status(new Error('boom\nstack')).message, 'internal error: boom');
  const own = new ApiError(404, 'nope');
  assert.equal(status(own), own);
});

test('seeds: any integer-valued number, 64-bit ones included (OpenAI takes them); not fractions', () => {
  const seed = (value: unknown) => chatRequestSchema.safeParse({ model: 'm', messages: [], seed: value }).success;
  for (const value of [0, -1, 2 ** 32, 2 ** 53, 2 ** 63, -(2 ** 63), 18446744073709551615, null]) {
    assert.ok(seed(value), String(value));
  }
  assert.equal(seed(1.5), false);
  assert.equal(
    zodError({ model: 'm', messages: [], seed: 1.5 }).message,
    "Invalid value for 'seed': expected an integer.",
  );
});

test('what the device cannot honour is refused by name; prompts and content are read as text or ids', () => {
  const refused = (body: Record<string, unknown>) => {
    try {
      checkSupported({ model: 'm', ...body } as never);
      return undefined;
    } catch (error) {
      return (error as ApiError).param;
    }
  };
  assert.equal(refused({ messages: [], n: 2 }), 'n');
  assert.equal(refused({ messages: [], tools: [{}] }), 'tools');
  assert.equal(refused({ prompt: 'x', echo: true }), 'echo');
  assert.equal(refused({ prompt: 'x', best_of: 2 }), 'best_of');
  assert.equal(refused({ messages: [], n: 1, tools: [] }), undefined);
  assert.equal(
    messageText(
      [
        { type: 'text', text: 'a' },
        { type: 'text', text: 'b' },
      ],
      0,
    ),
    'a\nb',
  );
  assert.equal(messageText(null, 0), '');
  const image = (error: ApiError) => error.param === 'messages[2].content[0]';
  assert.throws(() => messageText([{ type: 'image_url' }], 2), image);
  assert.deepEqual(completionPrompt([1, 2, 3]), { ids: [1, 2, 3] });
  assert.deepEqual(completionPrompt([[4, 5]]), { ids: [4, 5] });
  assert.equal(completionPrompt(['one']), 'one');
  assert.throws(
    () => completionPrompt(['one', 'two']),
    (error: ApiError) => error.param === 'prompt',
  );
});
