import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startCloud } from '../../../src/runtime/cloud/serve.ts';
import { silentLogger } from '../../../src/runtime/cloud/logger.ts';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { manifestHash, readManifest } from '../../../src/runtime/split-dir.ts';
import { decodeFrame, decodeJson, encodeFrame, encodeJson } from '../../../src/runtime/protocol/frame.ts';
import { makeToySplitDir, TOY_HIDDEN, toyExpected } from '../../helpers/toy-split.ts';
import { HatError } from '../../../src/errors.ts';

let server: CloudServer;
let url: string;
let hash: string;
let port: number;
const splitDir = makeToySplitDir();

before(async () => {
  const started = await startCloud({
    splitDir, host: '127.0.0.1', port: 0, token: 'sesame', workers: 2, maxSessions: 4, idleTimeoutMs: 60_000,
    maxTokensPerFrame: 16, maxContext: 64, logger: silentLogger,
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
const asRows = (data: Float32Array) => Array.from({ length: data.length / TOY_HIDDEN }, (_, i) => [...data.slice(i * TOY_HIDDEN, (i + 1) * TOY_HIDDEN)]);

test('a session runs the middle part on its own cache and rolls it back to pastLength', async () => {
  const client = await connect();
  const a = [1, 2, 3, 4], b = [10, 20, 30, 40], c = [5, 5, 5, 5], d = [100, 0, 0, 0];
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
  await assert.rejects(connect(), (e: HatError) => /SESSION_LIMIT/.test(e.message));
  held.forEach((c) => c.close());
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.sessionCount, 0);
});

/** Opens a raw socket, completes the handshake, and returns it with its session id. */
async function rawSession(): Promise<{ socket: WebSocket; sessionId: number; next: () => Promise<{ type: string; body?: unknown }> }> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  const inbox: Array<(frame: { type: string; body?: unknown }) => void> = [];
  const queued: Array<{ type: string; body?: unknown }> = [];
  socket.on('message', (data: Buffer) => {
    const frame = decodeFrame(new Uint8Array(data), { maxPayloadBytes: 1 << 20 });
    const item = { type: frame.header.type, body: frame.header.dtype === 'none' && frame.payload.length ? decodeJson(frame.payload) : undefined };
    const waiter = inbox.shift();
    if (waiter) waiter(item); else queued.push(item);
  });
  socket.on('close', () => { const waiter = inbox.shift(); if (waiter) waiter({ type: 'closed' }); else queued.push({ type: 'closed' }); });
  const next = () => new Promise<{ type: string; body?: unknown }>((resolve) => { const item = queued.shift(); if (item) resolve(item); else inbox.push(resolve); });
  await new Promise((resolve) => socket.once('open', resolve));
  socket.send(encodeFrame({ type: 'hello', seq: 0 }, encodeJson({ manifestHash: hash, token: 'sesame' })));
  const welcome = await next();
  return { socket, sessionId: (welcome.body as { sessionId: number }).sessionId, next };
}

test('every kind of bad frame closes only its own session; a concurrent session is untouched', async () => {
  const bystander = await connect();
  const forward = (sessionId: number, seq: number, extra: Record<string, number> = {}, payload = new Uint8Array(TOY_HIDDEN * 4)) =>
    encodeFrame({ type: 'forward', dtype: 'fp32', sessionId, seq, nTokens: 1, hiddenSize: TOY_HIDDEN, ...extra }, payload);
  const cases: Array<[string, (id: number) => Uint8Array | string, RegExp]> = [
    ['bad magic', (id) => { const f = forward(id, 1); f[0] = 0; return f; }, /magic/],
    ['bad version', (id) => { const f = forward(id, 1); f[4] = 9; return f; }, /version/],
    ['bad dtype', (id) => { const f = forward(id, 1); f[8] = 42; return f; }, /dtype/],
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

test('health and readiness endpoints answer over HTTP', async () => {
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(health.status, 200);
  const ready = await (await fetch(`http://127.0.0.1:${port}/ready`)).json() as { ready: boolean };
  assert.equal(ready.ready, true);
});

test('idle sessions expire', async () => {
  const started = await startCloud({
    splitDir, host: '127.0.0.1', port: 0, workers: 1, maxSessions: 2, idleTimeoutMs: 200,
    maxTokensPerFrame: 16, maxContext: 64, logger: silentLogger,
  });
  try {
    const client = await CloudClient.connect({ url: `ws://127.0.0.1:${started.port}`, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32' });
    await new Promise((r) => setTimeout(r, 600));
    await assert.rejects(client.forward(rows([1, 1, 1, 1]), 1, 0, { allPositions: true }), (e: HatError) => /IDLE_TIMEOUT|closed/.test(e.message));
    assert.equal(started.server.sessionCount, 0);
  } finally {
    await started.server.stop();
  }
});

test('a server-side emulated link delays every round trip by its latency and serialisation time', async () => {
  const { parseLinkSpec } = await import('../../../src/runtime/link.ts');
  const started = await startCloud({
    splitDir, host: '127.0.0.1', port: 0, workers: 1, maxSessions: 2, idleTimeoutMs: 60_000,
    maxTokensPerFrame: 16, maxContext: 64, logger: silentLogger, link: parseLinkSpec('up=0.01MB,down=1MB,rtt=40'),
  });
  try {
    const client = await CloudClient.connect({ url: `ws://127.0.0.1:${started.port}`, manifestHash: hash, hiddenSize: TOY_HIDDEN, wire: 'fp32' });
    // 16 rows of 4 fp32 + header ≈ 308 bytes at 10 kB/s up ≈ 31 ms, plus 20 ms each way.
    const result = await client.forward(new Float32Array(16 * TOY_HIDDEN), 16, 0, { allPositions: true });
    assert.ok(result.roundTripMs >= 70, `round trip ${result.roundTripMs.toFixed(1)} ms`);
    client.close();
  } finally {
    await started.server.stop();
  }
});
