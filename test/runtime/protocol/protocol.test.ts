import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, encodeFrame, FrameFlags, HEADER_BYTES, MAGIC } from '../../../src/runtime/protocol/frame.ts';
import { decodeHidden, encodeHidden } from '../../../src/runtime/protocol/hidden-codec.ts';
import { HatError } from '../../../src/errors.ts';

const limits = { maxPayloadBytes: 1024 };

test('a frame round-trips every header field and its payload', () => {
  const payload = new Uint8Array([1, 2, 3, 4, 5]);
  const bytes = encodeFrame(
    {
      type: 'forward',
      flags: 3,
      dtype: 'fp16',
      sessionId: 7,
      seq: 9,
      pastLength: 11,
      nTokens: 2,
      hiddenSize: 64,
      queueMs: 1.5,
      computeMs: 2.5,
      latencyBaseMs: 0.5,
      latencyPerTokenMs: 0.25,
    },
    payload,
  );
  const frame = decodeFrame(bytes, limits);
  assert.deepEqual(frame.header, {
    type: 'forward',
    flags: 3,
    dtype: 'fp16',
    sessionId: 7,
    seq: 9,
    pastLength: 11,
    nTokens: 2,
    hiddenSize: 64,
    queueMs: 1.5,
    computeMs: 2.5,
    latencyBaseMs: 0.5,
    latencyPerTokenMs: 0.25,
    advisedRows: 0,
    promptRows: 0,
  });
  assert.deepEqual([...frame.payload], [1, 2, 3, 4, 5]);
  // A result carries the cloud's rows advice (u16).
  const result = decodeFrame(encodeFrame({ type: 'result', advisedRows: 300 }), limits);
  assert.equal(result.header.advisedRows, 300);
  assert.throws(() => encodeFrame({ type: 'result', advisedRows: 70_000 }), /does not fit the header's u16/);
  // A prefill chunk tells the prompt's rows left (the same two bytes, u16).
  const chunk = encodeFrame(
    { type: 'forward', flags: FrameFlags.prefill, nTokens: 2, promptRows: 900 },
    new Uint8Array(8),
  );
  assert.deepEqual(
    [decodeFrame(chunk, limits).header.promptRows, decodeFrame(chunk, limits).header.advisedRows],
    [900, 0],
  );
  assert.throws(() => encodeFrame({ type: 'forward', advisedRows: 2 }), /forward frame cannot carry advisedRows/);
  assert.throws(() => encodeFrame({ type: 'result', promptRows: 2 }), /result frame cannot carry promptRows/);
});

function expectProtocolError(bytes: Uint8Array, pattern: RegExp) {
  assert.throws(
    () => decodeFrame(bytes, limits),
    (e: HatError) => e.code === 'PROTOCOL' && pattern.test(e.message),
  );
}

test('bad frames are rejected with a message naming the problem', () => {
  const good = encodeFrame({ type: 'forward' }, new Uint8Array(8));
  expectProtocolError(good.slice(0, 10), /shorter than/);
  const badMagic = good.slice();
  badMagic[0] ^= 0xff;
  expectProtocolError(badMagic, /magic/);
  const badVersion = good.slice();
  new DataView(badVersion.buffer).setUint16(4, 99, true);
  expectProtocolError(badVersion, /version 99/);
  const badType = good.slice();
  badType[6] = 200;
  expectProtocolError(badType, /unknown frame type/);
  const badDtype = good.slice();
  badDtype[8] = 77;
  expectProtocolError(badDtype, /unknown wire dtype/);
  expectProtocolError(encodeFrame({ type: 'forward' }, new Uint8Array(2048)), /over the 1024-byte limit/);
  expectProtocolError(good.slice(0, HEADER_BYTES + 4), /announces 8 payload bytes/);
  const reserved = good.slice();
  reserved[9] = 1;
  expectProtocolError(reserved, /reserved header byte 9/);
  const withRowsField = (header: Parameters<typeof encodeFrame>[0], value: number) => {
    const bytes = encodeFrame(header, new Uint8Array(8));
    new DataView(bytes.buffer).setUint16(10, value, true);
    return bytes;
  };
  expectProtocolError(withRowsField({ type: 'bye' }, 2), /bye frame carries advisedRows/);
  expectProtocolError(
    withRowsField({ type: 'forward', flags: FrameFlags.allPositions, nTokens: 2 }, 9),
    /not a prefill chunk carries promptRows/,
  );
  expectProtocolError(
    withRowsField({ type: 'forward', flags: FrameFlags.prefill, nTokens: 2 }, 1),
    /promptRows 1 is fewer than the chunk's own 2 rows/,
  );
  assert.equal(new DataView(good.buffer).getUint32(0, true), MAGIC);
});

test('hidden states survive fp32 exactly, fp16 and int8 within their precision', () => {
  const rows = 3,
    cols = 16;
  const values = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * (1 + (i % 5)));
  assert.deepEqual(decodeHidden(encodeHidden(values, rows, cols, 'fp32'), rows, cols, 'fp32'), values);
  const half = decodeHidden(encodeHidden(values, rows, cols, 'fp16'), rows, cols, 'fp16');
  const int8 = decodeHidden(encodeHidden(values, rows, cols, 'int8'), rows, cols, 'int8');
  for (let i = 0; i < values.length; i++) {
    assert.ok(Math.abs(half[i] - values[i]) <= Math.abs(values[i]) * 1e-3 + 1e-4);
    const rowMax = Math.max(
      ...values.slice(Math.floor(i / cols) * cols, Math.floor(i / cols) * cols + cols).map(Math.abs),
    );
    assert.ok(Math.abs(int8[i] - values[i]) <= rowMax / 127 / 2 + 1e-6);
  }
  assert.equal(encodeHidden(values, rows, cols, 'int8').length, rows * (4 + cols));
  assert.throws(
    () => decodeHidden(new Uint8Array(10), rows, cols, 'fp16'),
    (e: HatError) => e.code === 'PROTOCOL',
  );
});
