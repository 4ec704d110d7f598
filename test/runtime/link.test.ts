import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmulatedDirection, parseLinkSpec, LINK_PROFILES } from '../../src/runtime/link.ts';
import { HatError } from '../../src/errors.ts';
import { waitFor } from '../helpers/wait-for.ts';

test('serialisation delay is bytes / bandwidth, queued behind earlier frames, plus latency', () => {
  const link = new EmulatedDirection({ bandwidth: 1e6, latencyMs: 10, jitterMs: 0 });
  assert.equal(link.delayFor(100_000, 0), 100 + 10); // 0.1 s on the wire + 10 ms
  assert.equal(link.delayFor(100_000, 0), 200 + 10); // waits for the first frame to leave
  assert.equal(link.delayFor(1_000, 500), 1 + 10); // link idle again by t = 500 ms
});

test('jitter never reorders frames and stays within its bound', () => {
  const link = new EmulatedDirection({ bandwidth: Infinity, latencyMs: 5, jitterMs: 4 }, 42);
  let lastArrival = -Infinity;
  for (let t = 0; t < 200; t += 0.5) {
    const arrival = t + link.delayFor(10, t);
    assert.ok(arrival >= lastArrival);
    assert.ok(arrival - t <= 9 + 1e-9);
    lastArrival = arrival;
  }
});

test('link specs parse from profile names and explicit numbers; bad ones give a one-line error', () => {
  assert.equal(parseLinkSpec('wifi'), LINK_PROFILES.wifi);
  const custom = parseLinkSpec('up=5MB,down=800kB,rtt=20,jitter=2');
  assert.equal(custom.up.bandwidth, 5e6);
  assert.equal(custom.down.bandwidth, 8e5);
  assert.equal(custom.up.latencyMs, 10);
  assert.throws(
    () => parseLinkSpec('satellite'),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  assert.throws(
    () => parseLinkSpec('up=fast'),
    (e: HatError) => e.code === 'BAD_OPTION',
  );
  // Object.prototype's names are not profiles (`--link constructor` was a TypeError, INTERNAL).
  for (const name of ['constructor', 'toString', 'valueOf', '__proto__']) {
    assert.throws(
      () => parseLinkSpec(name),
      (e: HatError) => e.code === 'BAD_OPTION',
      name,
    );
  }
  // Delays past Node's 2^31-ms timer limit fire at once: such links are refused, not emulated backwards.
  for (const spec of ['up=0.0000001kB', 'down=0.5kB', 'rtt=1e12', 'jitter=60001', 'rtt=-1']) {
    assert.throws(
      () => parseLinkSpec(spec),
      (e: HatError) => e.code === 'BAD_OPTION',
      spec,
    );
  }
  assert.equal(parseLinkSpec('up=1kB,rtt=60000').up.latencyMs, 30_000);
  assert.throws(
    () => parseLinkSpec('speed=1'),
    (e: HatError) => /unknown key/.test(e.message),
  );
});

test('frames arrive in the order they were sent, even when sent late in a busy turn, with jitter', async () => {
  // Node schedules a timer from the loop's cached clock, not from performance.now(): a frame sent late in a long
  // turn with a short computed delay could fire before an earlier frame with a longer one.
  const direction = new EmulatedDirection({ bandwidth: Infinity, latencyMs: 5, jitterMs: 5 }, 7);
  const arrived: number[] = [];
  const sent = 60;
  for (let i = 0; i < sent; i++) {
    const busyUntil = performance.now() + (i % 3) * 2;
    while (performance.now() < busyUntil); // the turn goes on: the loop's clock does not move
    direction.send(100, () => arrived.push(i));
  }
  await waitFor(() => arrived.length === sent, { what: 'every frame' });
  assert.deepEqual(
    arrived,
    Array.from({ length: sent }, (_, i) => i),
  );
});
