/**
 * Edges of the wire format: header integers that do not fit, payloads handed over as Node Buffers at odd offsets,
 * and hidden states a wire dtype cannot carry (int8 with NaN/Infinity, fp16 past ±65504) or a peer should not send.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HatError, type ErrorCode } from '../../../src/errors.ts';
import { decodeFrame, encodeFrame, HEADER_BYTES, type FrameHeader } from '../../../src/runtime/protocol/frame.ts';
import { decodeHidden, encodeHidden } from '../../../src/runtime/protocol/hidden-codec.ts';

const limits = { maxPayloadBytes: 1 << 20 };
const failsWith = (code: ErrorCode, message: RegExp) => (error: unknown) =>
  error instanceof HatError && error.code === code && message.test(error.message);

test('a header integer that does not fit its field is refused, not wrapped', () => {
  const u32 = ['sessionId', 'seq', 'pastLength', 'nTokens', 'hiddenSize'] as const;
  for (const field of u32) {
    for (const value of [2 ** 32 + 5, 2 ** 33, -1, 1.7, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => encodeFrame({ type: 'forward', [field]: value }),
        failsWith('INTERNAL', new RegExp(`^${field} .* does not fit the header's u32`)),
        `${field} = ${value}`,
      );
    }
  }
  for (const value of [256, -1, 0.5]) {
    assert.throws(() => encodeFrame({ type: 'forward', flags: value }), failsWith('INTERNAL', /^flags .* u8/));
  }
  assert.throws(() => encodeFrame({ type: 'result', advisedRows: 0x10000 }), failsWith('INTERNAL', /u16/));
  assert.throws(
    () => encodeFrame({ type: 'nope' as FrameHeader['type'] }),
    failsWith('INTERNAL', /unknown frame type/),
  );
  assert.throws(
    () => encodeFrame({ type: 'forward', dtype: 'bf16' as FrameHeader['dtype'] }),
    failsWith('INTERNAL', /unknown wire dtype/),
  );
  // The largest values that fit still round-trip.
  const max = { sessionId: 0xffffffff, seq: 0xffffffff, pastLength: 0xffffffff, nTokens: 0xffffffff };
  const header = decodeFrame(encodeFrame({ type: 'forward', flags: 3, hiddenSize: 0xffffffff, ...max }), limits).header;
  assert.deepEqual(
    [header.sessionId, header.seq, header.pastLength, header.nTokens, header.hiddenSize, header.flags],
    [...Object.values(max), 0xffffffff, 3],
  );
});

/** `bytes` inside a Node Buffer at byte offset `offset` (as a socket's pooled memory hands frames over). */
function inBuffer(bytes: Uint8Array, offset: number): Buffer {
  const buffer = Buffer.alloc(bytes.length + offset);
  buffer.set(bytes, offset);
  return buffer.subarray(offset);
}

test('a frame or payload in a Node Buffer at an odd offset decodes, and the payload is a copy', () => {
  const values = Float32Array.of(1, -2, 3.5, 4, 0.25, -6);
  for (const dtype of ['fp32', 'fp16', 'int8'] as const) {
    const payload = encodeHidden(values, 2, 3, dtype);
    const expected = decodeHidden(payload, 2, 3, dtype);
    for (const offset of [1, 2, 3, 5]) {
      assert.deepEqual(decodeHidden(inBuffer(payload, offset), 2, 3, dtype), expected, `${dtype} at +${offset}`);
      const framed = inBuffer(encodeFrame({ type: 'result', dtype, nTokens: 2, hiddenSize: 3 }, payload), offset);
      const frame = decodeFrame(framed, limits);
      assert.notEqual(frame.payload.buffer, framed.buffer, 'the payload does not share the socket buffer');
      assert.equal(frame.payload.byteOffset % 4, 0);
      assert.deepEqual(decodeHidden(frame.payload, 2, 3, dtype), expected, `${dtype} frame at +${offset}`);
      framed.fill(0, HEADER_BYTES);
      assert.deepEqual(decodeHidden(frame.payload, 2, 3, dtype), expected, 'later socket writes do not reach it');
    }
  }
});

test('int8 refuses a non-finite value (it would spoil its row) and stays within ±127', () => {
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    const values = Float32Array.of(0.5, 1, -2, 4, bad, 300, -1000, 0.5);
    assert.throws(
      () => encodeHidden(values, 2, 4, 'int8'),
      (error: unknown) =>
        failsWith('RUNTIME', new RegExp(`row 1 holds ${bad} \\(column 0\\)`))(error) && !!(error as HatError).hint,
      String(bad),
    );
  }
  // Rows of extreme but finite values: every quantised value in [-127, 127], each decoded within scale / 2.
  const rows = [
    [3.4e38, -3.4e38, 1, 0],
    [1e-30, -1e-30, 5e-31, 0],
    [127, -127, 63.5, -63.5],
    [0, 0, 0, 0],
  ];
  const values = Float32Array.from(rows.flat());
  const payload = encodeHidden(values, 4, 4, 'int8');
  const quantised = new Int8Array(payload.buffer, 4 * 4, 16);
  assert.ok(
    quantised.every((q) => q >= -127 && q <= 127),
    'no value wraps to -128',
  );
  const scales = new Float32Array(payload.buffer, 0, 4);
  const decoded = decodeHidden(payload, 4, 4, 'int8');
  decoded.forEach((v, i) => assert.ok(Math.abs(v - values[i]) <= scales[Math.floor(i / 4)] / 2 + 1e-6 * Math.abs(v)));
});

test('fp16 refuses a finite value past its range rather than sending ±Infinity; what it can hold goes', () => {
  for (const big of [70000, -1e5, 65520, 3e38]) {
    assert.throws(
      () => encodeHidden(Float32Array.of(1, 2, 3, big), 2, 2, 'fp16'),
      (error: unknown) =>
        failsWith('RUNTIME', /row 1\) is beyond fp16's range/)(error) && /--wire/.test(`${(error as HatError).hint}`),
      String(big),
    );
  }
  // 65519 rounds to the largest half, 65504, as before.
  assert.deepEqual(
    decodeHidden(encodeHidden(Float32Array.of(65519, -65504), 1, 2, 'fp16'), 1, 2, 'fp16'),
    Float32Array.of(65504, -65504),
  );
});

test('a non-finite hidden value is refused when decoded, whoever sent it (fp32 and fp16 carry it as it is)', () => {
  for (const dtype of ['fp32', 'fp16'] as const) {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const payload = encodeHidden(Float32Array.of(1, 2, bad, 4), 2, 2, dtype);
      assert.throws(
        () => decodeHidden(payload, 2, 2, dtype),
        failsWith('PROTOCOL', /value .* at 2 is not finite/),
        `${dtype} ${bad}`,
      );
    }
  }
  // An int8 payload whose scale overflows float32 once multiplied out.
  const payload = encodeHidden(Float32Array.of(1, 2), 1, 2, 'int8');
  new Float32Array(payload.buffer, 0, 1)[0] = 3e38;
  assert.throws(() => decodeHidden(payload, 1, 2, 'int8'), failsWith('PROTOCOL', /not finite/));
});
