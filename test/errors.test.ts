/** HatErrors as plain data across threads, processes and sockets: the code and hint come back as they left. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorData, errorFromData, HatError } from '../src/errors.ts';

test('a HatError crosses as data with its code and hint; other errors and unknown codes take the fallback', () => {
  const data = structuredClone(errorData(new HatError('CONTEXT_LIMIT', 'too long', 'shorten it')));
  const back = errorFromData(data, 'NETWORK', 'device 3: ');
  assert.deepEqual([back.code, back.message, back.hint], ['CONTEXT_LIMIT', 'device 3: too long', 'shorten it']);
  const plain = errorFromData(errorData(new TypeError('x is undefined')), 'INTERNAL');
  assert.deepEqual([plain.code, plain.message, plain.hint], ['INTERNAL', 'x is undefined', undefined]);
  const unknown = errorFromData({ message: 'm', code: 'NOT_A_CODE' as never }, 'RUNTIME');
  assert.equal(unknown.code, 'RUNTIME');
  assert.equal(errorFromData({ message: 'm', code: 'toString' as never }, 'RUNTIME').code, 'RUNTIME');
});
