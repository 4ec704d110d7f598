/**
 * The hat wire format, version 1 (docs/protocol.md): a fixed 52-byte little-endian header, then the payload.
 * Tensor payloads carry hidden states only; control payloads (hello/welcome/error) are small JSON objects.
 * Decoding validates everything a peer controls and throws HatError('PROTOCOL') naming the field.
 */
import { HatError } from '../../errors.ts';

export const MAGIC = 0x31544148; // "HAT1" read as a little-endian u32
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 52;

export const FrameType = {
  hello: 1,
  welcome: 2,
  /** Device → cloud: hidden states to run through the middle part. */
  forward: 3,
  /** Cloud → device: the middle part's output for a forward frame. */
  result: 4,
  error: 5,
  bye: 6,
} as const;
export type FrameTypeName = keyof typeof FrameType;
const FRAME_TYPE_NAMES = new Map<number, FrameTypeName>(
  Object.entries(FrameType).map(([k, v]) => [v, k as FrameTypeName]),
);

export const WireDType = { none: 0, fp32: 1, fp16: 2, int8: 3 } as const;
export type WireDTypeName = keyof typeof WireDType;
const WIRE_DTYPE_NAMES = new Map<number, WireDTypeName>(
  Object.entries(WireDType).map(([k, v]) => [v, k as WireDTypeName]),
);

export const FrameFlags = {
  /** forward: return the middle output for every position (otherwise only the last). */
  allPositions: 1,
  /** forward: this is a prompt chunk (prefill), not a verification. */
  prefill: 2,
} as const;

const KNOWN_FLAGS = Object.values(FrameFlags).reduce((a, b) => a | b, 0);

export interface FrameHeader {
  type: FrameTypeName;
  flags: number;
  dtype: WireDTypeName;
  sessionId: number;
  /** Per-direction sequence number, starting at 0 on each connection. */
  seq: number;
  /** forward: the cloud truncates this session's cache to this length before appending (rollback). */
  pastLength: number;
  nTokens: number;
  hiddenSize: number;
  /** result: time the request waited in the cloud's queue and the middle part's run time, in ms. */
  queueMs: number;
  computeMs: number;
  /** result: the cloud's fitted latency model g(X) = latencyBaseMs + latencyPerTokenMs · X for X tokens. */
  latencyBaseMs: number;
  latencyPerTokenMs: number;
  /**
   * result: the most rows the cloud advises this session's next verification to carry (0: no advice). Sent only to
   * devices whose hello lists the 'rows-advice' feature (docs/protocol.md).
   */
  advisedRows: number;
  /**
   * forward, prefill chunks only: the rows the prompt has left from this chunk on, the chunk's own included (0: not
   * said; at most 65,535). Sent only to a cloud whose welcome lists the 'prompt-rows' feature (docs/protocol.md):
   * its scheduler then knows a prompt's length before the prompt's later chunks arrive.
   */
  promptRows: number;
}

export interface Frame {
  header: FrameHeader;
  payload: Uint8Array;
}

export interface DecodeLimits {
  maxPayloadBytes: number;
}

/**
 * DataView's setters wrap what does not fit (2^32 + 5 goes out as 5, −1 as 2^32 − 1, 1.7 as 1), so the peer would act
 * on another number. Every header integer comes from this process's own state, not from a peer: INTERNAL.
 */
function fits(field: string, value: number, max: number, type: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw new HatError('INTERNAL', `${field} ${value} does not fit the header's ${type}`);
}

function protocolError(message: string): HatError {
  return new HatError('PROTOCOL', message, 'the peer speaks a different or broken hat protocol');
}

export function encodeFrame(
  header: Partial<FrameHeader> & Pick<FrameHeader, 'type'>,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const advisedRows = header.advisedRows ?? 0;
  fits('advisedRows', advisedRows, 0xffff, 'u16');
  const promptRows = header.promptRows ?? 0;
  fits('promptRows', promptRows, 0xffff, 'u16');
  // Bytes 10–11 hold advisedRows on a result and promptRows on a forward frame.
  if (advisedRows !== 0 && header.type !== 'result')
    throw new HatError('INTERNAL', `a ${header.type} frame cannot carry advisedRows`);
  if (promptRows !== 0 && header.type !== 'forward')
    throw new HatError('INTERNAL', `a ${header.type} frame cannot carry promptRows`);
  const flags = header.flags ?? 0;
  fits('flags', flags, 0xff, 'u8');
  for (const field of ['sessionId', 'seq', 'pastLength', 'nTokens', 'hiddenSize'] as const)
    fits(field, header[field] ?? 0, 0xffffffff, 'u32');
  // A name outside the tables would go out as type or dtype 0 (setUint8 of undefined).
  if (typeof FrameType[header.type] !== 'number') throw new HatError('INTERNAL', `unknown frame type '${header.type}'`);
  if (typeof WireDType[header.dtype ?? 'none'] !== 'number')
    throw new HatError('INTERNAL', `unknown wire dtype '${header.dtype}'`);
  const bytes = new Uint8Array(HEADER_BYTES + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint16(4, PROTOCOL_VERSION, true);
  view.setUint8(6, FrameType[header.type]);
  view.setUint8(7, flags);
  view.setUint8(8, WireDType[header.dtype ?? 'none']);
  view.setUint16(10, advisedRows || promptRows, true);
  view.setUint32(12, header.sessionId ?? 0, true);
  view.setUint32(16, header.seq ?? 0, true);
  view.setUint32(20, header.pastLength ?? 0, true);
  view.setUint32(24, header.nTokens ?? 0, true);
  view.setUint32(28, header.hiddenSize ?? 0, true);
  view.setFloat32(32, header.queueMs ?? 0, true);
  view.setFloat32(36, header.computeMs ?? 0, true);
  view.setFloat32(40, header.latencyBaseMs ?? 0, true);
  view.setFloat32(44, header.latencyPerTokenMs ?? 0, true);
  view.setUint32(48, payload.length, true);
  bytes.set(payload, HEADER_BYTES);
  return bytes;
}

export function decodeFrame(data: Uint8Array, limits: DecodeLimits): Frame {
  if (data.length < HEADER_BYTES)
    throw protocolError(`frame of ${data.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw protocolError('frame does not start with the HAT1 magic');
  const version = view.getUint16(4, true);
  if (version !== PROTOCOL_VERSION)
    throw protocolError(`protocol version ${version} is not supported (this peer speaks ${PROTOCOL_VERSION})`);
  const type = FRAME_TYPE_NAMES.get(view.getUint8(6));
  if (!type) throw protocolError(`unknown frame type ${view.getUint8(6)}`);
  const dtype = WIRE_DTYPE_NAMES.get(view.getUint8(8));
  if (!dtype) throw protocolError(`unknown wire dtype ${view.getUint8(8)}`);
  const flags = view.getUint8(7);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw protocolError(`unknown flag bits 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
  if (view.getUint8(9) !== 0) throw protocolError('reserved header byte 9 is not zero');
  const rowsField = view.getUint16(10, true);
  if (type !== 'result' && type !== 'forward' && rowsField !== 0)
    throw protocolError(`a ${type} frame carries advisedRows`);
  const nTokens = view.getUint32(24, true);
  if (type === 'forward' && rowsField !== 0) {
    if ((flags & FrameFlags.prefill) === 0)
      throw protocolError('a forward frame that is not a prefill chunk carries promptRows');
    if (rowsField < Math.min(nTokens, 0xffff))
      throw protocolError(`promptRows ${rowsField} is fewer than the chunk's own ${nTokens} rows`);
  }
  const payloadBytes = view.getUint32(48, true);
  if (payloadBytes > limits.maxPayloadBytes)
    throw protocolError(`payload of ${payloadBytes} bytes is over the ${limits.maxPayloadBytes}-byte limit`);
  if (payloadBytes !== data.length - HEADER_BYTES) {
    throw protocolError(
      `header announces ${payloadBytes} payload bytes but the frame carries ${data.length - HEADER_BYTES}`,
    );
  }
  const header: FrameHeader = {
    type,
    flags,
    dtype,
    sessionId: view.getUint32(12, true),
    seq: view.getUint32(16, true),
    pastLength: view.getUint32(20, true),
    nTokens,
    hiddenSize: view.getUint32(28, true),
    queueMs: view.getFloat32(32, true),
    computeMs: view.getFloat32(36, true),
    latencyBaseMs: view.getFloat32(40, true),
    latencyPerTokenMs: view.getFloat32(44, true),
    advisedRows: type === 'result' ? rowsField : 0,
    promptRows: type === 'forward' ? rowsField : 0,
  };
  // Copy so the payload is 4-byte aligned and independent of the socket's buffer. Not data.slice(): on a Node
  // Buffer that is a view, at whatever offset the frame had in the socket's pooled memory.
  return { header, payload: new Uint8Array(data.subarray(HEADER_BYTES)) };
}

export function encodeJson(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

export function decodeJson(payload: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw protocolError('control payload is not valid UTF-8 JSON');
  }
}
