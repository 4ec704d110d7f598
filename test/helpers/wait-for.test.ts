import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, withinDeadline } from './wait-for.ts';

test('waitFor returns the first truthy value, polling until then; a throwing predicate counts as not yet', async () => {
  let calls = 0;
  const value = await waitFor(
    () => {
      calls++;
      if (calls < 3) throw new Error('not ready');
      return calls < 5 ? 0 : { calls };
    },
    { what: 'five calls', intervalMs: 1 },
  );
  assert.deepEqual(value, { calls: 5 });
});

test('waitFor fails at its deadline with what it waited for and the last value or error', async () => {
  await assert.rejects(
    waitFor(() => false, { what: 'a condition that never holds', timeoutMs: 30 }),
    { message: 'timed out after 30 ms waiting for a condition that never holds (last: false)' },
  );
  await assert.rejects(
    waitFor(
      () => {
        throw new Error('boom');
      },
      { what: 'x', timeoutMs: 30 },
    ),
    { message: 'timed out after 30 ms waiting for x (last: boom)' },
  );
});

test('withinDeadline passes a settled promise through and rejects one that does not settle', async () => {
  assert.equal(await withinDeadline(Promise.resolve(7), { what: 'seven' }), 7);
  await assert.rejects(withinDeadline(Promise.reject(new Error('own')), { what: 'x' }), { message: 'own' });
  await assert.rejects(withinDeadline(new Promise(() => {}), { what: 'a promise that never settles', timeoutMs: 30 }), {
    message: 'timed out after 30 ms waiting for a promise that never settles',
  });
});
