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
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { HatError } from '../errors.ts';
import { llamaConfig, type LlamaConfig } from './config.ts';
import type { WeightMap } from './weights.ts';

const HEADER_BYTES = 7 * 4;
/** llama2.c's newer export formats start with this magic ("ak42"); only the legacy format is supported. */
const VERSIONED_MAGIC = 0x616b3432;

export interface Llama2cCheckpoint {
  config: LlamaConfig;
  weights: WeightMap;
}

function readAll(path: string): Buffer {
  assertReadableFile(path, `checkpoint ${path}`, 'give the llama2.c .bin checkpoint file');
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const buffer = Buffer.alloc(size);
    let done = 0;
    while (done < size) done += readSync(fd, buffer, done, size - done, done);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

export function readLlama2cCheckpoint(path: string): Llama2cCheckpoint {
  const bytes = readAll(path);
  if (bytes.length < HEADER_BYTES)
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} is ${bytes.length} bytes, too short for a llama2.c header`,
      'give a llama2.c .bin checkpoint (e.g. stories260K.bin)',
    );
  if (bytes.readUInt32LE(0) === VERSIONED_MAGIC) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} is a versioned llama2.c export, not the legacy format`,
      'export it with llama2.c export.py --version 0',
    );
  }
  const [dim, hidden, layers, heads, kvHeads, signedVocab, seqLen] = Array.from({ length: 7 }, (_, i) =>
    bytes.readInt32LE(i * 4),
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

  const sizes = {
    embedding: vocab * dim,
    rmsAtt: layers * dim,
    wq: layers * dim * dim,
    wk: layers * kvDim * dim,
    wv: layers * kvDim * dim,
    wo: layers * dim * dim,
    rmsFfn: layers * dim,
    w1: layers * hidden * dim,
    w2: layers * dim * hidden,
    w3: layers * hidden * dim,
    rmsFinal: dim,
    freqReal: seqLen * (headDim / 2),
    freqImag: seqLen * (headDim / 2),
    classifier: signedVocab > 0 ? 0 : vocab * dim,
  };
  const floats = Object.values(sizes).reduce((a, b) => a + b, 0);
  const expectedBytes = HEADER_BYTES + floats * 4;
  if (bytes.length !== expectedBytes) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${path} holds ${bytes.length} bytes but its header (dim ${dim}, ${layers} layers, vocab ${vocab}) ` +
        `needs ${expectedBytes}`,
      bytes.length < expectedBytes
        ? 'the file is truncated: download it again'
        : 'the file is not a legacy llama2.c checkpoint',
    );
  }
  // Copy out of the file buffer: its float data starts at byte 28, and typed views need 4-byte alignment anyway.
  const data = new Float32Array(floats);
  for (let i = 0; i < floats; i++) data[i] = bytes.readFloatLE(HEADER_BYTES + i * 4);
  let offset = 0;
  const take = (count: number) => data.subarray(offset, (offset += count));
  const arrays = Object.fromEntries(Object.entries(sizes).map(([name, count]) => [name, take(count)])) as Record<
    keyof typeof sizes,
    Float32Array
  >;

  const weights: WeightMap = new Map();
  weights.set('model.embed_tokens.weight', arrays.embedding.slice());
  const perLayer = (all: Float32Array, l: number, count: number) => all.subarray(l * count, (l + 1) * count);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    weights.set(`${p}.input_layernorm.weight`, perLayer(arrays.rmsAtt, l, dim).slice());
    weights.set(
      `${p}.self_attn.q_proj.weight`,
      transpose(interleavedToHalves(perLayer(arrays.wq, l, dim * dim), heads, headDim, dim), dim, dim),
    );
    weights.set(
      `${p}.self_attn.k_proj.weight`,
      transpose(interleavedToHalves(perLayer(arrays.wk, l, kvDim * dim), kvHeads, headDim, dim), kvDim, dim),
    );
    weights.set(`${p}.self_attn.v_proj.weight`, transpose(perLayer(arrays.wv, l, kvDim * dim), kvDim, dim));
    weights.set(`${p}.self_attn.o_proj.weight`, transpose(perLayer(arrays.wo, l, dim * dim), dim, dim));
    weights.set(`${p}.post_attention_layernorm.weight`, perLayer(arrays.rmsFfn, l, dim).slice());
    weights.set(`${p}.mlp.gate_proj.weight`, transpose(perLayer(arrays.w1, l, hidden * dim), hidden, dim));
    weights.set(`${p}.mlp.down_proj.weight`, transpose(perLayer(arrays.w2, l, dim * hidden), dim, hidden));
    weights.set(`${p}.mlp.up_proj.weight`, transpose(perLayer(arrays.w3, l, hidden * dim), hidden, dim));
  }
  weights.set('model.norm.weight', arrays.rmsFinal.slice());
  if (!config.tiedEmbeddings) weights.set('lm_head.weight', transpose(arrays.classifier, vocab, dim));
  return { config, weights };
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
