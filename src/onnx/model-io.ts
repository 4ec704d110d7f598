/**
 * ONNX model I/O: decode/encode ModelProto (onnx-proto), read tensor bytes inline or from external data
 * (streamed with positioned reads, never a whole >2 GiB file in one buffer), and write external data.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import pkg from 'onnx-proto';
import { HatError } from '../errors.ts';

export const { onnx } = pkg;
// The decoded messages are class instances, but the graph fields are typed with the I* interfaces.
export type ModelProto = pkg.onnx.IModelProto;
export type GraphProto = pkg.onnx.IGraphProto;
export type NodeProto = pkg.onnx.INodeProto;
export type TensorProto = pkg.onnx.ITensorProto;
export type ValueInfoProto = pkg.onnx.IValueInfoProto;
export type AttributeProto = pkg.onnx.IAttributeProto;
export const DataType = onnx.TensorProto.DataType;

const PROTOBUF_LIMIT = 2 ** 31 - 1;

export interface LoadedModel {
  model: ModelProto;
  /** Absolute path of the .onnx file; external-data locations resolve against its directory. */
  path: string;
  dir: string;
}

/** protobufjs gives int64 fields as Long objects or numbers; everything hat handles fits a double. */
export function toNumber(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (value && typeof (value as { toNumber?: unknown }).toNumber === 'function') {
    return (value as { toNumber(): number }).toNumber();
  }
  return Number(value);
}

export function tensorDims(tensor: TensorProto): number[] {
  return (tensor.dims ?? []).map(toNumber);
}

export function elementCount(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

const BYTES_PER_ELEMENT: Record<number, number> = {
  [DataType.FLOAT]: 4,
  [DataType.UINT8]: 1,
  [DataType.INT8]: 1,
  [DataType.UINT16]: 2,
  [DataType.INT16]: 2,
  [DataType.INT32]: 4,
  [DataType.INT64]: 8,
  [DataType.BOOL]: 1,
  [DataType.FLOAT16]: 2,
  [DataType.DOUBLE]: 8,
  [DataType.UINT32]: 4,
  [DataType.UINT64]: 8,
  [DataType.BFLOAT16]: 2,
};

export function bytesPerElement(dataType: number): number {
  const size = BYTES_PER_ELEMENT[dataType];
  if (!size) throw new HatError('UNSUPPORTED_MODEL', `tensor data type ${dataType} is not supported`);
  return size;
}

export function dataTypeName(dataType: number): string {
  return (onnx.TensorProto.DataType as unknown as Record<number, string>)[dataType]?.toLowerCase() ?? `type${dataType}`;
}

/** A model path as users give it: the .onnx file, or the folder holding model.onnx (as `hat generate` takes). */
export function modelFilePath(path: string): string {
  const absolute = resolve(path);
  if (existsSync(absolute) && statSync(absolute).isDirectory()) {
    const inside = join(absolute, 'model.onnx');
    if (existsSync(inside)) return inside;
    throw new HatError('FILE_NOT_FOUND', `${path} is a folder without model.onnx`, 'give the .onnx file itself');
  }
  if (!existsSync(absolute)) throw new HatError('FILE_NOT_FOUND', `model file not found: ${path}`, 'check the path');
  return absolute;
}

export async function loadModel(path: string): Promise<LoadedModel> {
  const absolute = modelFilePath(path);
  if (statSync(absolute).size > PROTOBUF_LIMIT) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `${path} is over 2 GiB with weights inline`,
      'export it with external data (weights in a separate .onnx.data file)',
    );
  }
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(await readFile(absolute));
  } catch (error) {
    throw new HatError(
      'BAD_MODEL',
      `${path} is not a valid ONNX model (${(error as Error).message})`,
      'the file may be truncated or not ONNX: re-export or re-download it',
    );
  }
  if (!model.graph || (model.graph.node ?? []).length === 0) {
    throw new HatError('BAD_MODEL', `${path} has no graph nodes`, 'the file may be truncated or not ONNX');
  }
  return { model, path: absolute, dir: dirname(absolute) };
}

export interface ExternalLocation {
  location: string;
  offset: number;
  length: number;
}

export function isExternal(tensor: TensorProto): boolean {
  return tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
}

export function externalLocation(tensor: TensorProto): ExternalLocation | undefined {
  if (!isExternal(tensor)) return undefined;
  const entry = (key: string) => (tensor.externalData ?? []).find((e) => e.key === key)?.value;
  const location = entry('location');
  if (!location) throw new HatError('BAD_MODEL', `tensor ${tensor.name ?? '?'} is external but names no location`);
  const offset = Number(entry('offset') ?? 0);
  const length =
    entry('length') !== undefined && entry('length') !== null
      ? Number(entry('length'))
      : elementCount(tensorDims(tensor)) * bytesPerElement(tensor.dataType ?? 0);
  return { location, offset, length };
}

/** Every external-data file the model names, with the bytes it must hold; throws if one is missing or short. */
export function checkExternalData(loaded: LoadedModel): Map<string, number> {
  const needed = new Map<string, number>();
  for (const tensor of loaded.model.graph!.initializer ?? []) {
    const ext = externalLocation(tensor);
    if (ext) needed.set(ext.location, Math.max(needed.get(ext.location) ?? 0, ext.offset + ext.length));
  }
  for (const [location, bytes] of needed) {
    const file = resolve(loaded.dir, location);
    if (!existsSync(file)) {
      throw new HatError(
        'MISSING_EXTERNAL_DATA',
        `external-data file ${location} (next to ${loaded.path}) is missing`,
        'keep the .onnx file and its data file(s) together in one folder',
      );
    }
    const size = statSync(file).size;
    if (size < bytes) {
      throw new HatError(
        'MISSING_EXTERNAL_DATA',
        `external-data file ${location} holds ${size} bytes but the model needs ${bytes}`,
        'the data file is truncated: copy it again',
      );
    }
  }
  return needed;
}

/** Reads `length` bytes at `offset` of a file with positioned reads (files over 2 GiB are fine). */
export function readFileRange(file: string, offset: number, length: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n === 0) throw new HatError('MISSING_EXTERNAL_DATA', `${file} ended before byte ${offset + length}`);
      done += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** The tensor's raw little-endian bytes, wherever they live (raw_data, typed fields or external data). */
export function tensorBytes(loaded: Pick<LoadedModel, 'dir'>, tensor: TensorProto): Uint8Array {
  const ext = externalLocation(tensor);
  if (ext) return readFileRange(resolve(loaded.dir, ext.location), ext.offset, ext.length);
  if (tensor.rawData && tensor.rawData.length > 0) {
    // onnx-proto's rawData is an unaligned view into the file buffer: copy so typed-array views work.
    return new Uint8Array(tensor.rawData);
  }
  const count = elementCount(tensorDims(tensor));
  const size = bytesPerElement(tensor.dataType ?? 0);
  const t = tensor as pkg.onnx.TensorProto;
  const out = new Uint8Array(count * size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) {
    switch (tensor.dataType) {
      case DataType.FLOAT:
        view.setFloat32(i * 4, t.floatData[i], true);
        break;
      case DataType.DOUBLE:
        view.setFloat64(i * 8, t.doubleData[i], true);
        break;
      case DataType.INT64:
        view.setBigInt64(i * 8, BigInt(toNumber(t.int64Data[i])), true);
        break;
      case DataType.UINT64:
        view.setBigUint64(i * 8, BigInt(toNumber(t.uint64Data[i])), true);
        break;
      case DataType.INT32:
        view.setInt32(i * 4, t.int32Data[i], true);
        break;
      // int8/uint8/bool/int16/uint16/fp16/bf16 live in int32_data, one element per entry (low bits).
      default:
        if (size === 1) view.setUint8(i, t.int32Data[i] & 0xff);
        else if (size === 2) view.setUint16(i * 2, t.int32Data[i] & 0xffff, true);
        else throw new HatError('UNSUPPORTED_MODEL', `cannot read tensor ${tensor.name} of type ${tensor.dataType}`);
    }
  }
  return out;
}

/** A 1-D int64 constant (shapes, axes, indices) as an initializer, its values in raw_data. */
export function int64Tensor(name: string, values: number[]): TensorProto {
  const bytes = new Uint8Array(values.length * 8);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return onnx.TensorProto.create({ name, dataType: DataType.INT64, dims: [values.length], rawData: bytes });
}

/** Makes the tensor read its bytes from `location` (relative to the model's folder) at offset/length. */
export function pointAtExternalData(tensor: TensorProto, where: ExternalLocation): void {
  tensor.rawData = new Uint8Array(0);
  tensor.floatData = [];
  tensor.int32Data = [];
  tensor.int64Data = [];
  tensor.doubleData = [];
  tensor.uint64Data = [];
  tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  tensor.externalData = [
    { key: 'location', value: where.location },
    { key: 'offset', value: String(where.offset) },
    { key: 'length', value: String(where.length) },
  ];
}

const COPY_CHUNK = 8 * 1024 * 1024;
const ALIGN_LARGE = 64 * 1024; // Windows maps external data at 64 KiB; align tensors >= 1 MiB to it.
const ALIGN_SMALL = 64;

/**
 * Appends tensors to one external-data file and points each TensorProto at its bytes. Large tensors get
 * 64 KiB-aligned offsets; copies from other files stream in 8 MiB chunks.
 */
export class ExternalDataWriter {
  readonly path: string;
  readonly location: string;
  private fd: number;
  private offset = 0;

  constructor(path: string, location: string) {
    this.path = path;
    this.location = location;
    this.fd = openSync(path, 'w');
  }

  get bytesWritten(): number {
    return this.offset;
  }

  private alignFor(length: number): void {
    const align = length >= 1024 * 1024 ? ALIGN_LARGE : ALIGN_SMALL;
    const padded = Math.ceil(this.offset / align) * align;
    if (padded > this.offset) {
      writeSync(this.fd, new Uint8Array(padded - this.offset), 0, padded - this.offset, this.offset);
      this.offset = padded;
    }
  }

  private point(tensor: TensorProto, offset: number, length: number): void {
    pointAtExternalData(tensor, { location: this.location, offset, length });
  }

  appendBytes(tensor: TensorProto, bytes: Uint8Array): void {
    this.alignFor(bytes.length);
    const start = this.offset;
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done, start + done);
    this.offset += bytes.length;
    this.point(tensor, start, bytes.length);
  }

  /**
   * Appends a tensor whose bytes arrive in pieces (e.g. weights generated on the fly), so it never sits whole
   * in memory. The pieces must add up to exactly `length` bytes.
   */
  appendChunks(tensor: TensorProto, length: number, chunks: Iterable<Uint8Array>): void {
    this.alignFor(length);
    const start = this.offset;
    let done = 0;
    for (const chunk of chunks) {
      if (done + chunk.length > length)
        throw new HatError('INTERNAL', `tensor ${tensor.name ?? '?'}: chunks exceed its ${length} bytes`);
      let written = 0;
      while (written < chunk.length)
        written += writeSync(this.fd, chunk, written, chunk.length - written, start + done + written);
      done += chunk.length;
    }
    if (done !== length) {
      throw new HatError('INTERNAL', `tensor ${tensor.name ?? '?'}: chunks hold ${done} of its ${length} bytes`);
    }
    this.offset += length;
    this.point(tensor, start, length);
  }

  /** Copies `length` bytes at `offset` of `source` into this file without holding them all in memory. */
  appendFromFile(tensor: TensorProto, source: string, offset: number, length: number): void {
    this.alignFor(length);
    const start = this.offset;
    const input = openSync(source, 'r');
    try {
      const buffer = new Uint8Array(Math.min(COPY_CHUNK, Math.max(length, 1)));
      let done = 0;
      while (done < length) {
        const n = readSync(input, buffer, 0, Math.min(buffer.length, length - done), offset + done);
        if (n === 0) throw new HatError('MISSING_EXTERNAL_DATA', `${source} ended before byte ${offset + length}`);
        writeSync(this.fd, buffer, 0, n, start + done);
        done += n;
      }
    } finally {
      closeSync(input);
    }
    this.offset += length;
    this.point(tensor, start, length);
  }

  close(): void {
    if (this.fd >= 0) {
      fstatSync(this.fd);
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/** Encodes and writes the model; writes to a temporary name first so a failure leaves no half-written file. */
export async function saveModel(model: ModelProto, path: string): Promise<void> {
  const bytes = onnx.ModelProto.encode(model).finish();
  const temporary = `${path}.partial`;
  await writeFile(temporary, bytes);
  await rename(temporary, path);
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}
