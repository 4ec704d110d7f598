/**
 * Where each part's weights go.
 *  - copy (default): every tensor of 1 KiB or more is streamed into the part's own `<part>.onnx.data`; small
 *    ones stay inline. The device bundle is then self-sufficient.
 *  - reference: tensors already external keep pointing at the source's data files at their original offsets;
 *    nothing is copied. onnxruntime refuses external data outside the model's folder (absolute paths and
 *    symlinks included), so the source files are hard-linked into `source-data/` of the split directory: same
 *    bytes on disk, no copy. Inline tensors stay inline.
 */
import { linkSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import { HatError } from '../errors.ts';
import {
  bytesPerElement,
  elementCount,
  externalLocation,
  ExternalDataWriter,
  onnx,
  pointAtExternalData,
  tensorBytes,
  tensorDims,
  type LoadedModel,
  type TensorProto,
} from '../onnx/model-io.ts';

export type WeightsMode = 'copy' | 'reference';
export const INLINE_LIMIT = 1024;
export const SOURCE_DATA_DIR = 'source-data';

export interface PartWeights {
  initializers: TensorProto[];
  /** Data files the part reads, relative to the split directory. */
  dataFiles: string[];
  bytes: number;
}

function byteLength(tensor: TensorProto): number {
  return externalLocation(tensor)?.length ?? elementCount(tensorDims(tensor)) * bytesPerElement(tensor.dataType ?? 0);
}

function emptyClone(tensor: TensorProto): TensorProto {
  return onnx.TensorProto.create({
    name: tensor.name,
    dims: tensor.dims,
    dataType: tensor.dataType,
    docString: tensor.docString,
  });
}

/** Hard-links a source data file into the split directory once; returns its location relative to the parts. */
function linkSourceData(source: LoadedModel, location: string, splitDir: string, linked: Set<string>): string {
  const relative = normalize(location);
  if (isAbsolute(relative) || relative.startsWith('..')) {
    throw new HatError('UNSUPPORTED_MODEL', `external-data location '${location}' points outside the model's folder`);
  }
  const target = join(splitDir, SOURCE_DATA_DIR, relative);
  if (!linked.has(relative)) {
    mkdirSync(dirname(target), { recursive: true });
    try {
      linkSync(resolve(source.dir, relative), target);
    } catch (error) {
      throw new HatError(
        'OUTPUT_EXISTS',
        `--weights reference could not hard-link ${resolve(source.dir, relative)} ` +
          `into ${splitDir} (${(error as NodeJS.ErrnoException).code})`,
        'put --out on the same filesystem as the model, or use --weights copy',
      );
    }
    linked.add(relative);
  }
  return `${SOURCE_DATA_DIR}/${relative}`;
}

export function writePartWeights(
  partName: string,
  tensors: TensorProto[],
  source: LoadedModel,
  mode: WeightsMode,
  splitDir: string,
  linked: Set<string>,
): PartWeights {
  const dataFile = `${partName}.onnx.data`;
  let writer: ExternalDataWriter | undefined;
  const dataFiles = new Set<string>();
  let bytes = 0;
  try {
    const initializers = tensors.map((tensor) => {
      const external = externalLocation(tensor);
      const length = byteLength(tensor);
      bytes += length;
      if (!external && (length < INLINE_LIMIT || mode === 'reference')) return tensor;
      const clone = emptyClone(tensor);
      if (mode === 'reference' && external) {
        const location = linkSourceData(source, external.location, splitDir, linked);
        pointAtExternalData(clone, { ...external, location });
        dataFiles.add(location);
        return clone;
      }
      writer ??= new ExternalDataWriter(join(splitDir, dataFile), dataFile);
      if (external)
        writer.appendFromFile(clone, resolve(source.dir, external.location), external.offset, external.length);
      else writer.appendBytes(clone, tensorBytes(source, tensor));
      dataFiles.add(dataFile);
      return clone;
    });
    return { initializers, dataFiles: [...dataFiles], bytes };
  } finally {
    writer?.close();
  }
}
