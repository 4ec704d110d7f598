import { test, after, before, mock } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { manifestHash, readManifest } from '../../../src/runtime/split-dir.ts';
import { decodeFrame, decodeJson, encodeFrame, encodeJson } from '../../../src/runtime/protocol/frame.ts';
import { makeToySplitDir, TOY_HIDDEN, toyExpected } from '../../helpers/toy-split.ts';
import { serveSplit } from '../../helpers/runtime-fixtures.ts';
import { HatError } from '../../../src/errors.ts';
import { EmulatedDirection, parseLinkSpec } from '../../../src/runtime/link.ts';
import { HEADER_BYTES } from '../../../src/runtime/protocol/frame.ts';
import { waitFor } from '../../helpers/wait-for.ts';

let server: CloudServer;
let url: string;
let hash: string;
let port: number;
const splitDir = makeToySplitDir();

before(async () => {
  const started = await serveSplit(splitDir, {
    token: 'sesame',
    workers: 2,
    maxSessions: 4,
    maxTokensPerFrame: 16,
    maxContext: 64,
  });
  server = started.server;
  port = started.port;
  url = `ws://127.0.0.1:${port}`;
  hash = manifestHash(readManifest(splitDir));
});
after(() => server.stop());

const connect = (overrides: Partial<Parameters<typeof CloudClient.connect>[0]> = {}) =>
  CloudClient.connect({ url, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32', token: 'sesame', ...overrides });

const rows = (...r: number[][]) => Float32Array.from(r.flat());
const asRows = (data: Float32Array) =>
  Array.from({ length: data.length / TOY_HIDDEN }, (_, i) => [...data.slice(i * TOY_HIDDEN, (i + 1) * TOY_HIDDEN)]);

test('a session runs the middle part on its own cache and rolls it back to pastLength', async () => {
  const client = await connect();
  const a = [1, 2, 3, 4],
    b = [10, 20, 30, 40],
    c = [5, 5, 5, 5],
    d = [100, 0, 0, 0];
  const first = await client.forward(rows(a, b, c), 3, 0, { allPositions: true });
  assert.deepEqual(asRows(first.hidden), toyExpected([], [a, b, c]));
  // Keep only `a`, as after a verification that accepted nothing past it.
  const second = await client.forward(rows(d), 1, 1, { allPositions: true });
  assert.deepEqual(asRows(second.hidden), toyExpected([a], [d]));
  // Prefill-style: only the last row comes back.
  const third = await client.forward(rows(a, b), 2, 2, { allPositions: false });
  assert.equal(third.rows, 1);
  assert.deepEqual(asRows(third.hidden), toyExpected([a, d, a], [b]));
  assert.ok(third.computeMs > 0 && third.queueMs >= 0);
  client.close();
});

test('fp16 and int8 wires carry the hidden states within their precision', async () => {
  for (const wire of ['fp16', 'int8'] as const) {
    const client = await connect({ wire });
    const result = await client.forward(rows([1, 2, 3, 4]), 1, 0, { allPositions: true });
    const expected = toyExpected([], [[1, 2, 3, 4]])[0];
    result.hidden.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 0.1, `${wire}: ${v} vs ${expected[i]}`));
    client.close();
  }
});

test('the handshake rejects another split, a wrong token, and sessions over the limit', async () => {
  await assert.rejects(connect({ manifestHash: 'f'.repeat(64) }), (e: HatError) => /MANIFEST_MISMATCH/.test(e.message));
  await assert.rejects(connect({ token: 'wrong' }), (e: HatError) => /UNAUTHORIZED/.test(e.message));
  const held = await Promise.all([connect(), connect(), connect(), connect()]);
  assert.equal(server.sessionCount, 4);
  await assert.rejects(connect(), (e: HatError) => /SESSION_LIMIT/.test(e.message));
  held.forEach((c) => c.close());
  await waitFor(() => server.sessionCount === 0, { what: 'the server to forget the four closed sessions' });
});

/** Opens a raw socket, completes the handshake, and returns it with its session id. */
async function rawSession(): Promise<{
  socket: WebSocket;
  sessionId: number;
  next: () => Promise<{ type: string; body?: unknown }>;
}> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  const inbox: Array<(frame: { type: string; body?: unknown }) => void> = [];
  const queued: Array<{ type: string; body?: unknown }> = [];
  socket.on('message', (data: Buffer) => {
    const frame = decodeFrame(new Uint8Array(data), { maxPayloadBytes: 1 << 20 });
    const item = {
      type: frame.header.type,
      body: frame.header.dtype === 'none' && frame.payload.length ? decodeJson(frame.payload) : undefined,
    };
    const waiter = inbox.shift();
    if (waiter) waiter(item);
    else queued.push(item);
  });
  socket.on('close', () => {
    const waiter = inbox.shift();
    if (waiter) waiter({ type: 'closed' });
    else queued.push({ type: 'closed' });
  });
  const next = () =>
    new Promise<{ type: string; body?: unknown }>((resolve) => {
      const item = queued.shift();
      if (item) resolve(item);
      else inbox.push(resolve);
    });
  await new Promise((resolve) => socket.once('open', resolve));
  socket.send(encodeFrame({ type: 'hello', seq: 0 }, encodeJson({ manifestHash: hash, token: 'sesame' })));
  const welcome = await next();
  return { socket, sessionId: (welcome.body as { sessionId: number }).sessionId, next };
}

test('every kind of bad frame closes only its own session; a concurrent session is untouched', async () => {
  const bystander = await connect();
  const forward = (
    sessionId: number,
    seq: number,
    extra: Record<string, number> = {},
    payload = new Uint8Array(TOY_HIDDEN * 4),
  ) =>
    encodeFrame(
      { type: 'forward', dtype: 'fp32', sessionId, seq, nTokens: 1, hiddenSize: TOY_HIDDEN, ...extra },
      payload,
    );
  const cases: Array<[string, (id: number) => Uint8Array | string, RegExp]> = [
    [
      'bad magic',
      (id) => {
        const f = forward(id, 1);
        f[0] = 0;
        return f;
      },
      /magic/,
    ],
    [
      'bad version',
      (id) => {
        const f = forward(id, 1);
        f[4] = 9;
        return f;
      },
      /version/,
    ],
    [
      'bad dtype',
      (id) => {
        const f = forward(id, 1);
        f[8] = 42;
        return f;
      },
      /dtype/,
    ],
    ['wrong shape', (id) => forward(id, 1, { hiddenSize: 8 }, new Uint8Array(32)), /hidden size 8/],
    ['payload size', (id) => forward(id, 1, {}, new Uint8Array(12)), /does not match/],
    ['over the limit', (id) => forward(id, 1, { nTokens: 17 }, new Uint8Array(17 * TOY_HIDDEN * 4)), /1\.\.16 tokens/],
    ['unknown session', (id) => forward(id + 1, 1), /unknown session/],
    ['out of order', (id) => forward(id, 5), /out-of-order/],
    ['text message', () => 'hello', /text message/],
    ['past beyond cache', (id) => forward(id, 1, { pastLength: 3 }), /beyond the session's cache/],
  ];
  for (const [label, make, pattern] of cases) {
    const { socket, sessionId, next } = await rawSession();
    socket.send(make(sessionId));
    const reply = await next();
    assert.equal(reply.type, 'error', label);
    assert.match((reply.body as { message: string }).message, pattern, label);
    assert.equal((await next()).type, 'closed', label);
  }
  const still = await bystander.forward(rows([1, 1, 1, 1]), 1, 0, { allPositions: true });
  assert.deepEqual(asRows(still.hidden), [[2, 2, 2, 2]]);
  bystander.close();
});

test("through an emulated link the device still gets the cloud's reason, not a bare closed connection", async () => {
  const link = parseLinkSpec('4g'); // 25 ms one way: the close used to overtake the delayed error frame
  await assert.rejects(connect({ token: 'wrong', link }), (e: HatError) => e.code === 'UNAUTHORIZED');
  const started = await serveSplit(splitDir, { idleTimeoutMs: 200, maxTokensPerFrame: 16, maxContext: 64, link });
  try {
    const url = `ws://127.0.0.1:${started.port}`;
    const client = await CloudClient.connect({ url, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32', link });
    await waitFor(() => client.closed, { what: 'the idle session to expire' });
    await assert.rejects(client.forward(rows([1, 1, 1, 1]), 1, 0, { allPositions: true }), (e: HatError) => {
      assert.equal(e.code, 'IDLE_TIMEOUT');
      return true;
    });
  } finally {
    await started.server.stop();
  }
});

test('health and readiness endpoints answer over HTTP', async () => {
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(health.status, 200);
  const ready = (await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as { ready: boolean };
  assert.equal(ready.ready, true);
});

test('idle sessions expire', async () => {
  const started = await serveSplit(splitDir, { idleTimeoutMs: 200, maxTokensPerFrame: 16, maxContext: 64 });
  try {
    const url = `ws://127.0.0.1:${started.port}`;
    const client = await CloudClient.connect({ url, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32' });
    assert.equal(started.server.sessionCount, 1);
    await waitFor(() => client.closed && started.server.sessionCount === 0, { what: 'the idle session to expire' });
    // The error frame comes before the socket closes, so the device reports the server's reason.
    await assert.rejects(client.forward(rows([1, 1, 1, 1]), 1, 0, { allPositions: true }), (e: HatError) => {
      assert.equal(e.code, 'IDLE_TIMEOUT'); // the server's code, through the wire, unchanged
      assert.equal(e.message, 'the cloud closed the session: IDLE_TIMEOUT: no frame for 200 ms');
      return true;
    });
  } finally {
    await started.server.stop();
  }
});

test('a server-side emulated link schedules every frame by its latency and serialisation time', async () => {
  const link = parseLinkSpec('up=0.01MB,down=1MB,rtt=40');
  const started = await serveSplit(splitDir, { maxTokensPerFrame: 16, maxContext: 64, link });
  // Every delay the link schedules, by direction and frame size: what it delivers late is covered by link.test.ts.
  const delays = mock.method(EmulatedDirection.prototype, 'delayFor');
  try {
    const url = `ws://127.0.0.1:${started.port}`;
    const client = await CloudClient.connect({ url, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32' });
    const result = await client.forward(new Float32Array(16 * TOY_HIDDEN).fill(1), 16, 0, { allPositions: true });
    assert.deepEqual(
      asRows(result.hidden),
      toyExpected(
        [],
        Array.from({ length: 16 }, () => [1, 1, 1, 1]),
      ),
    );
    const frameBytes = HEADER_BYTES + 16 * TOY_HIDDEN * 4;
    const scheduled = delays.mock.calls.map((call) => ({
      direction: (call.this as unknown as { spec: unknown }).spec === link.up ? 'up' : 'down',
      bytes: call.arguments[0],
      ms: call.result!,
    }));
    // hello up, welcome down, then the forward frame and its result, each on an idle link: bytes / bandwidth
    // (10 kB/s up, 1 MB/s down) + half the 40 ms round trip.
    assert.deepEqual(scheduled.map(({ direction, bytes }) => [direction, bytes]).slice(2), [
      ['up', frameBytes],
      ['down', frameBytes],
    ]);
    assert.deepEqual(
      scheduled.slice(0, 2).map((d) => d.direction),
      ['up', 'down'],
    );
    const expectedMs = (bandwidth: number) => (frameBytes / bandwidth) * 1000 + 20;
    assert.ok(Math.abs(scheduled[2].ms - expectedMs(link.up.bandwidth)) < 1e-6, `uplink ${scheduled[2].ms} ms`);
    assert.ok(Math.abs(scheduled[3].ms - expectedMs(link.down.bandwidth)) < 1e-6, `downlink ${scheduled[3].ms} ms`);
    client.close();
  } finally {
    delays.mock.restore();
    await started.server.stop();
  }
});
