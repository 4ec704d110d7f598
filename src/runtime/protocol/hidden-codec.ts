/**
 * Hidden states on the wire: [rows, cols] float32 values as fp32, fp16, or int8 with one fp32 scale per row
 * (symmetric, scale = max|x| / 127), as Petals does for its 8-bit wire compression.
 */
import { HatError } from '../../errors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../../onnx/float16.ts';
import type { WireDTypeName } from './frame.ts';

export function wireBytesPerRow(dtype: WireDTypeName, cols: number): number {
  switch (dtype) {
    case 'fp32':
      return cols * 4;
    case 'fp16':
      return cols * 2;
    case 'int8':
      return 4 + cols;
    default:
      return 0;
  }
}

export function encodeHidden(values: Float32Array, rows: number, cols: number, dtype: WireDTypeName): Uint8Array {
  if (values.length !== rows * cols)
    throw new HatError('INTERNAL', `hidden state has ${values.length} values, expected ${rows}×${cols}`);
  switch (dtype) {
    case 'fp32':
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case 'fp16':
      return new Uint8Array(float32ToFloat16(values).buffer);
    case 'int8': {
      const out = new Uint8Array(rows * (4 + cols));
      const scales = new Float32Array(out.buffer, 0, rows);
      const quantised = new Int8Array(out.buffer, rows * 4, rows * cols);
      for (let r = 0; r < rows; r++) {
        let max = 0;
        for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(values[r * cols + c]));
        const scale = max / 127 || 1;
        scales[r] = scale;
        for (let c = 0; c < cols; c++) quantised[r * cols + c] = Math.round(values[r * cols + c] / scale);
      }
      return out;
    }
    default:
      throw new HatError('INTERNAL', `cannot encode hidden states as ${dtype}`);
  }
}

/** Decodes a payload; throws HatError('PROTOCOL') when its size does not match rows × cols of that dtype. */
export function decodeHidden(payload: Uint8Array, rows: number, cols: number, dtype: WireDTypeName): Float32Array {
  const expected = rows * wireBytesPerRow(dtype, cols);
  if (dtype === 'none' || payload.length !== expected) {
    throw new HatError(
      'PROTOCOL',
      `hidden-state payload of ${payload.length} bytes does not match ${rows}×${cols} ${dtype} (${expected} bytes)`,
      'device and cloud must agree on the hidden size and wire dtype',
    );
  }
  // decodeFrame hands out 4-byte-aligned copies, so typed views are safe.
  const aligned = payload.byteOffset % 4 === 0 ? payload : payload.slice();
  switch (dtype) {
    case 'fp32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, rows * cols).slice();
    case 'fp16':
      return float16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, rows * cols));
    default: {
      const scales = new Float32Array(aligned.buffer, aligned.byteOffset, rows);
      const quantised = new Int8Array(aligned.buffer, aligned.byteOffset + rows * 4, rows * cols);
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) out[r * cols + c] = quantised[r * cols + c] * scales[r];
      return out;
    }
  }
}
