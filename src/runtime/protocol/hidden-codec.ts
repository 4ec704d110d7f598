/**
 * Hidden states on the wire: [rows, cols] float32 values as fp32, fp16, or int8 with one fp32 scale per row
 * (symmetric, scale = max|x| / 127), as Petals does for its 8-bit wire compression.
 *
 * Encoding refuses a value its dtype would turn into another one (int8: a non-finite value, which would spoil its
 * row's scale; fp16: a finite value past ±65504, which would become ±Infinity). A non-finite value fp32 or fp16 can
 * carry goes as it is, and decoding refuses it: the receiver names the peer that sent it.
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
    case 'fp16': {
      const half = float32ToFloat16(values);
      for (let i = 0; i < half.length; i++) {
        // Throw rather than saturate to ±65504: a value this large is an outlier the next layers lean on (an
        // attention sink's massive activation), so clipping it would change the model's output with no sign; the
        // cloud refuses the ±Infinity it would otherwise become, so this only fails earlier, naming the fix.
        if ((half[i] & 0x7c00) === 0x7c00 && Number.isFinite(values[i])) {
          throw new HatError(
            'RUNTIME',
            `hidden state value ${values[i]} (row ${Math.floor(i / cols)}) is beyond fp16's range of ±65504`,
            'send hidden states as fp32 or int8 (--wire fp32 or --wire int8)',
          );
        }
      }
      return new Uint8Array(half.buffer);
    }
    case 'int8': {
      const out = new Uint8Array(rows * (4 + cols));
      const scales = new Float32Array(out.buffer, 0, rows);
      const quantised = new Int8Array(out.buffer, rows * 4, rows * cols);
      for (let r = 0; r < rows; r++) {
        let max = 0;
        for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(values[r * cols + c]));
        // Math.max carries a NaN through: one check covers the row. A NaN or infinite max would make the scale
        // meaningless (NaN || 1 is 1, and the row's other values would wrap modulo 256).
        if (!Number.isFinite(max)) throw nonFiniteRow(values, r, cols);
        const scale = max / 127 || 1;
        scales[r] = scale;
        // Clamped: Int8Array stores 128 as −128; only rounding could reach past 127 here.
        for (let c = 0; c < cols; c++)
          quantised[r * cols + c] = Math.max(-127, Math.min(127, Math.round(values[r * cols + c] / scale)));
      }
      return out;
    }
    default:
      throw new HatError('INTERNAL', `cannot encode hidden states as ${dtype}`);
  }
}

function nonFiniteRow(values: Float32Array, row: number, cols: number): HatError {
  let c = 0;
  while (c < cols && Number.isFinite(values[row * cols + c])) c++;
  return new HatError(
    'RUNTIME',
    `hidden state row ${row} holds ${values[row * cols + c]} (column ${c}), which int8 cannot carry`,
    'the model part before the wire computed a non-finite value: check the model and its dtype',
  );
}

/**
 * Decodes a payload; throws HatError('PROTOCOL') when its size does not match rows × cols of that dtype, or when a
 * decoded value is not finite (a NaN or ±Infinity from the peer, or an int8 scale that overflows float32).
 */
export function decodeHidden(payload: Uint8Array, rows: number, cols: number, dtype: WireDTypeName): Float32Array {
  const expected = rows * wireBytesPerRow(dtype, cols);
  if (dtype === 'none' || payload.length !== expected) {
    throw new HatError(
      'PROTOCOL',
      `hidden-state payload of ${payload.length} bytes does not match ${rows}×${cols} ${dtype} (${expected} bytes)`,
      'device and cloud must agree on the hidden size and wire dtype',
    );
  }
  // decodeFrame hands out 4-byte-aligned copies, so typed views are safe; anything else is copied (with
  // new Uint8Array, as slice() on a Node Buffer is a view at the same odd offset).
  const aligned = payload.byteOffset % 4 === 0 ? payload : new Uint8Array(payload);
  const values = decodeValues(aligned, rows, cols, dtype);
  // Checked here, on both sides: the next part would spread a NaN through every later position's attention.
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new HatError(
        'PROTOCOL',
        `hidden state value ${values[i]} at ${i} is not finite`,
        "the peer's model part computed a non-finite value, or its frame is corrupt",
      );
    }
  }
  return values;
}

function decodeValues(aligned: Uint8Array, rows: number, cols: number, dtype: WireDTypeName): Float32Array {
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
