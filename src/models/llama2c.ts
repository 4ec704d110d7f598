/**
 * Reads a llama2.c "legacy" (version 0) checkpoint — the format of Karpathy's run.c and the stories*.bin
 * models — into Hugging Face-named weights in hat's [in, out] layout.
 *
 * Layout: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
 * negative vocab_size means a separate classifier follows), then fp32 arrays: token_embedding, rms_att, wq, wk,
 * wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag [, wcls]. Matrices are PyTorch
 * [out, in] and stacked over layers.
 */
import { assertReadableFile } from '../file-checks.ts';
import { constants } from 'node:buffer';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { HatError } from '../errors.ts';
import { llamaConfig, type LlamaConfig } from './config.ts';
import { materialize, type WeightMap, type WeightSource } from './weights.ts';

const HEADER_BYTES = 7 * 4;
/** llama2.c's newer export formats start with this magic ("ak42"); only the legacy format is supported. */
const VERSIONED_MAGIC = 0x616b3432;
/** Bytes one readSync call may ask for (Node refuses more than 2 GiB - 1). */
const READ_CHUNK = 1 << 30;

export interface Llama2cCheckpoint {
  config: LlamaConfig;
  weights: WeightMap;
}

/** An open checkpoint: its header checked against the file size, its tensors read one at a time on demand. */
export interface Llama2cReader {
  config: LlamaConfig;
  /** Reads each tensor from the file when asked (a 7B checkpoint is 27 GB: it is never read whole). */
  source: WeightSource;
  close(): void;
}

/** Fills `target` from the file at `position`; a file that shrank since it was checked is a bad checkpoint. */
function readAt(fd: number, path: string, target: Uint8Array, position: number): void {
  for (let done = 0; done < target.length;) {
    const read = readSync(fd, target, done, Math.min(READ_CHUNK, target.length - done), position + done);
    if (read === 0) throw new HatError('BAD_CHECKPOINT', `${path} ended while it was read`, 'check the file');
    done += read;
  }
}

export function openLlama2cCheckpoint(path: string): Llama2cReader {
  assertReadableFile(path, `checkpoint ${path}`, 'give the llama2.c .bin checkpoint file');
  const fd = openSync(path, 'r');
  try {
    return { ...checkHeader(fd, path), close: () => closeSync(fd) };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** The header is read and checked against the file's size first, so a bad or truncated file costs no big read. */
function checkHeader(fd: number, path: string): Omit<Llama2cReader, 'close'> {
  const size = fstatSync(fd).size;
  if (size < HEADER_BYTES)
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} is ${size} bytes, too short for a llama2.c header`,
      'give a llama2.c .bin checkpoint (e.g. stories260K.bin)',
    );
  const header = Buffer.alloc(HEADER_BYTES);
  readAt(fd, path, header, 0);
  if (header.readUInt32LE(0) === VERSIONED_MAGIC) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} is a versioned llama2.c export, not the legacy format`,
      'export it with llama2.c export.py --version 0',
    );
  }
  const [dim, hidden, layers, heads, kvHeads, signedVocab, seqLen] = Array.from({ length: 7 }, (_, i) =>
    header.readInt32LE(i * 4),
  );
  const vocab = Math.abs(signedVocab);
  const plausible =
    [dim, hidden, layers, heads, kvHeads, vocab, seqLen].every((v) => v > 0 && v < 1 << 24) &&
    dim % heads === 0 &&
    heads % kvHeads === 0;
  if (!plausible) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} does not start with a llama2.c header ` +
        `(dim ${dim}, hidden ${hidden}, layers ${layers}, ` +
        `heads ${heads}/${kvHeads}, vocab ${signedVocab}, seq_len ${seqLen})`,
    );
  }
  const config = llamaConfig({
    vocabSize: vocab,
    hiddenSize: dim,
    intermediateSize: hidden,
    layers,
    heads,
    kvHeads,
    tiedEmbeddings: signedVocab > 0,
    maxPositions: seqLen,
    bosTokenId: 1,
    eosTokenId: 2,
  });
  const headDim = config.headDim;
  const kvDim = kvHeads * headDim;

  // Floats per layer (or in all, for the unstacked arrays), in file order.
  const perLayer = {
    embedding: vocab * dim,
    rmsAtt: dim,
    wq: dim * dim,
    wk: kvDim * dim,
    wv: kvDim * dim,
    wo: dim * dim,
    rmsFfn: dim,
    w1: hidden * dim,
    w2: dim * hidden,
    w3: hidden * dim,
    rmsFinal: dim,
    freqReal: seqLen * (headDim / 2),
    freqImag: seqLen * (headDim / 2),
    classifier: signedVocab > 0 ? 0 : vocab * dim,
  };
  const stacked = new Set(['rmsAtt', 'wq', 'wk', 'wv', 'wo', 'rmsFfn', 'w1', 'w2', 'w3']);
  const offsets = {} as Record<keyof typeof perLayer, number>;
  let end = HEADER_BYTES;
  for (const [name, count] of Object.entries(perLayer) as Array<[keyof typeof perLayer, number]>) {
    offsets[name] = end;
    end += count * 4 * (stacked.has(name) ? layers : 1);
  }
  if (size !== end) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} holds ${size} bytes but its header (dim ${dim}, ${layers} layers, vocab ${vocab}) needs ${end}`,
      size < end ? 'the file is truncated: download it again' : 'the file is not a legacy llama2.c checkpoint',
    );
  }
  const largest = Math.max(...Object.values(perLayer)) * 4;
  if (largest > constants.MAX_LENGTH)
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `${path} has a tensor of ${largest} bytes, more than one buffer can hold (${constants.MAX_LENGTH})`,
      'hat imports llama2.c checkpoints whose largest tensor fits in memory',
    );

  /** One layer's slice (layer 0 for the unstacked arrays), copied out as fp32 (typed views need alignment). */
  const read = (name: keyof typeof perLayer, layer = 0): Float32Array => {
    const values = new Float32Array(perLayer[name]);
    const bytes = new Uint8Array(values.buffer);
    readAt(fd, path, bytes, offsets[name] + layer * bytes.length);
    if (endianness() === 'BE') Buffer.from(values.buffer).swap32(); // the file is little-endian
    return values;
  };
  const tensors = new Map<string, () => Float32Array>();
  tensors.set('model.embed_tokens.weight', () => read('embedding'));
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    tensors.set(`${p}.input_layernorm.weight`, () => read('rmsAtt', l));
    tensors.set(`${p}.self_attn.q_proj.weight`, () =>
      transpose(interleavedToHalves(read('wq', l), heads, headDim, dim), dim, dim),
    );
    tensors.set(`${p}.self_attn.k_proj.weight`, () =>
      transpose(interleavedToHalves(read('wk', l), kvHeads, headDim, dim), kvDim, dim),
    );
    tensors.set(`${p}.self_attn.v_proj.weight`, () => transpose(read('wv', l), kvDim, dim));
    tensors.set(`${p}.self_attn.o_proj.weight`, () => transpose(read('wo', l), dim, dim));
    tensors.set(`${p}.post_attention_layernorm.weight`, () => read('rmsFfn', l));
    tensors.set(`${p}.mlp.gate_proj.weight`, () => transpose(read('w1', l), hidden, dim));
    tensors.set(`${p}.mlp.down_proj.weight`, () => transpose(read('w2', l), dim, hidden));
    tensors.set(`${p}.mlp.up_proj.weight`, () => transpose(read('w3', l), hidden, dim));
  }
  tensors.set('model.norm.weight', () => read('rmsFinal'));
  if (!config.tiedEmbeddings) tensors.set('lm_head.weight', () => transpose(read('classifier'), vocab, dim));
  const source: WeightSource = function* (spec) {
    const tensor = tensors.get(spec.name);
    if (!tensor) throw new HatError('INTERNAL', `llama2.c checkpoint has no tensor for ${spec.name}`);
    yield tensor();
  };
  return { config, source };
}

/** The whole checkpoint in memory (small models: tests, the reference forward, training experiments). */
export function readLlama2cCheckpoint(path: string): Llama2cCheckpoint {
  const checkpoint = openLlama2cCheckpoint(path);
  try {
    return { config: checkpoint.config, weights: materialize(checkpoint.config, checkpoint.source) };
  } finally {
    checkpoint.close();
  }
}

/** [rows, cols] → [cols, rows]: PyTorch's [out, in] to hat's [in, out]. */
function transpose(matrix: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = matrix[r * cols + c];
  return out;
}

/**
 * llama2.c rotates adjacent pairs (2i, 2i+1) of each head; hat's graph rotates halves (i, i + D/2), like
 * Hugging Face. Reordering each head's output rows to [0, 2, 4, …, 1, 3, 5, …] makes the two agree (the same
 * permutation of q and k leaves q·k unchanged) — the permutation HF's convert_llama_weights_to_hf applies.
 */
function interleavedToHalves(matrix: Float32Array, heads: number, headDim: number, inSize: number): Float32Array {
  const out = new Float32Array(matrix.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headDim; j++) {
      const source = h * headDim + (j < half ? 2 * j : 2 * (j - half) + 1);
      out.set(matrix.subarray(source * inSize, (source + 1) * inSize), (h * headDim + j) * inSize);
    }
  }
  return out;
}
