/**
 * Where a model's parameters come from: a `WeightSource` yields each tensor as fp32 chunks in row-major order,
 * so builders can stream multi-GB models (random weights are generated chunk by chunk) while small models and
 * imports simply hand over whole arrays.
 */
import { HatError } from '../errors.ts';
import type { LlamaConfig, WeightSpec } from './config.ts';
import { weightSpecs } from './config.ts';

/** Chunks may share one buffer: consume each chunk before asking for the next. */
export type WeightSource = (spec: WeightSpec) => Iterable<Float32Array>;

export type WeightMap = Map<string, Float32Array>;

/** Whole tensors from a map (imports, tests); a missing or mis-sized tensor is a bug in whoever filled the map. */
export function mapSource(weights: WeightMap): WeightSource {
  return (spec) => {
    const values = weights.get(spec.name);
    const expected = spec.dims.reduce((a, b) => a * b, 1);
    if (!values || values.length !== expected) {
      throw new HatError(
        'INTERNAL',
        `weight ${spec.name}: expected ${expected} values, have ${values?.length ?? 'none'}`,
      );
    }
    return [values];
  };
}

/** Reads every tensor of a source into memory: only for small models (tests, the reference forward). */
export function materialize(config: LlamaConfig, source: WeightSource): WeightMap {
  const weights: WeightMap = new Map();
  for (const spec of weightSpecs(config)) {
    const out = new Float32Array(spec.dims.reduce((a, b) => a * b, 1));
    let offset = 0;
    for (const chunk of source(spec)) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    weights.set(spec.name, out);
  }
  return weights;
}

/** FNV-1a: a per-tensor seed from its name, so a tensor's values do not depend on the order tensors are made in. */
function hashName(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export interface RandomWeightOptions {
  seed?: number;
  /** Standard deviation of matrices and embeddings (Hugging Face's initializer_range). */
  std?: number;
  /** Elements per generated chunk. */
  chunkElements?: number;
}

/**
 * Seeded random weights, generated chunk by chunk: uniform values with the requested standard deviation
 * (uniform is several times cheaper than normal and just as good for benchmarks), norm weights 1, biases small.
 */
export function randomWeights(options: RandomWeightOptions = {}): WeightSource {
  const seed = options.seed ?? 0;
  const std = options.std ?? 0.02;
  const chunkElements = options.chunkElements ?? 1 << 20;
  return function* (spec) {
    const total = spec.dims.reduce((a, b) => a * b, 1);
    if (spec.kind === 'norm') {
      yield new Float32Array(total).fill(1);
      return;
    }
    const halfWidth = std * Math.sqrt(3) * (spec.kind === 'bias' ? 0.5 : 1);
    let state = hashName(seed, spec.name);
    const chunk = new Float32Array(Math.min(chunkElements, total));
    for (let done = 0; done < total; done += chunk.length) {
      const n = Math.min(chunk.length, total - done);
      for (let i = 0; i < n; i++) {
        // mulberry32, inlined: this loop produces billions of values for the large presets.
        state = (state + 0x6d2b79f5) | 0;
        let t = Math.imul(state ^ (state >>> 15), state | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        chunk[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * halfWidth;
      }
      yield n === chunk.length ? chunk : chunk.subarray(0, n);
    }
  };
}
