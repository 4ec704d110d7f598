import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CANCELLED_WHILE_QUEUED, RequestQueue } from '../../src/api/request-queue.ts';
import { isHatError } from '../../src/errors.ts';
import { parseServeAddress } from '../../src/api/serve-device.ts';

test('one at a time in arrival order; past the bound a request is refused with BUSY', async () => {
  const queue = new RequestQueue(2);
  const order: string[] = [];
  const first = await queue.acquire();
  const waiting = ['b', 'c'].map((name) =>
    queue.acquire().then((release) => {
      order.push(name);
      return release;
    }),
  );
  assert.deepEqual({ running: queue.running, waiting: queue.waiting }, { running: true, waiting: 2 });
  await assert.rejects(queue.acquire(), (error: unknown) => isHatError(error) && error.code === 'BUSY');
  first();
  first(); // releasing twice is harmless
  (await waiting[0])();
  (await waiting[1])();
  assert.deepEqual(order, ['b', 'c']);
  assert.deepEqual({ running: queue.running, waiting: queue.waiting }, { running: false, waiting: 0 });
});

test('a request whose signal aborts while it waits leaves the queue', async () => {
  const queue = new RequestQueue(4);
  const release = await queue.acquire();
  const abort = new AbortController();
  const cancelled = queue.acquire(abort.signal);
  const next = queue.acquire();
  abort.abort();
  await assert.rejects(cancelled, (error: unknown) => error === CANCELLED_WHILE_QUEUED);
  assert.equal(queue.waiting, 1);
  release();
  (await next)();
  assert.equal(queue.running, false);
  await assert.rejects(queue.acquire(abort.signal), (error: unknown) => error === CANCELLED_WHILE_QUEUED);
});

test('--serve addresses: a port alone listens on loopback', () => {
  assert.deepEqual(parseServeAddress('8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseServeAddress('0.0.0.0:9000'), { host: '0.0.0.0', port: 9000 });
  assert.deepEqual(parseServeAddress('localhost:0'), { host: 'localhost', port: 0 });
  assert.deepEqual(parseServeAddress('[::1]:8080'), { host: '::1', port: 8080 });
  for (const bad of ['', 'http://x:80', '70000', 'host:', ':80']) {
    const refused = (error: unknown) => isHatError(error) && error.code === 'BAD_OPTION';
    assert.throws(() => parseServeAddress(bad), refused, bad);
  }
});
