/**
 * Small llama2.c files made in-test — a legacy checkpoint with random weights and a tokenizer.bin with bytes
 * plus a few merges — and a port of llama2.c's own encoder (run.c `encode`) to check converted tokenizers against.
 */
import { writeFileSync } from 'node:fs';
import { seededRandom } from '../../src/random.ts';

export interface TinyCheckpoint {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
  sharedClassifier: boolean;
}

export function writeLlama2cCheckpoint(path: string, c: TinyCheckpoint, seed = 1): Float32Array {
  const headDim = c.dim / c.heads;
  const kvDim = c.kvHeads * headDim;
  const floats =
    c.vocab * c.dim +
    c.layers * (2 * c.dim + 2 * c.dim * c.dim + 2 * kvDim * c.dim + 3 * c.hidden * c.dim) +
    c.dim +
    c.seqLen * headDim +
    (c.sharedClassifier ? 0 : c.vocab * c.dim);
  const random = seededRandom(seed);
  const data = Float32Array.from({ length: floats }, () => random.normal() * 0.3);
  const header = Int32Array.of(
    c.dim,
    c.hidden,
    c.layers,
    c.heads,
    c.kvHeads,
    c.sharedClassifier ? c.vocab : -c.vocab,
    c.seqLen,
  );
  writeFileSync(path, Buffer.concat([Buffer.from(header.buffer), Buffer.from(data.buffer)]));
  return data;
}

/** <unk>, <s>, </s>, the 256 byte tokens, then `pieces` (spaces as ' ', llama2.c style) with falling scores. */
export function writeLlama2cTokenizer(path: string, pieces: string[]): number {
  const entries: Array<[number, string]> = [
    [0, '<unk>'],
    [0, '\n<s>\n'],
    [0, '\n</s>\n'],
  ];
  for (let b = 0; b < 256; b++) entries.push([0, `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`]);
  pieces.forEach((piece, i) => entries.push([-i, piece]));
  const parts: Buffer[] = [
    Buffer.from(Int32Array.of(Math.max(...entries.map(([, p]) => Buffer.byteLength(p)))).buffer),
  ];
  for (const [score, piece] of entries) {
    const bytes = Buffer.from(piece, 'utf8');
    parts.push(Buffer.from(Float32Array.of(score).buffer), Buffer.from(Int32Array.of(bytes.length).buffer), bytes);
  }
  writeFileSync(path, Buffer.concat(parts));
  return entries.length;
}

/** llama2.c's encode(text, bos=1, eos=0) over a vocabulary whose spaces are written '▁'. */
export function llama2cEncode(pieces: string[], scores: number[], text: string): number[] {
  const ids = new Map<string, number>();
  pieces.forEach((piece, id) => {
    if (!ids.has(piece)) ids.set(piece, id);
  });
  const tokens = [1];
  if (text === '') return tokens;
  tokens.push(ids.get('▁')!);
  for (const char of Array.from(text.replaceAll(' ', '▁'))) {
    const id = ids.get(char);
    if (id !== undefined) tokens.push(id);
    else for (const byte of Buffer.from(char, 'utf8')) tokens.push(byte + 3);
  }
  for (;;) {
    let best = -1;
    let bestScore = -Infinity;
    let bestId = -1;
    for (let i = 1; i < tokens.length - 1; i++) {
      const id = ids.get(pieces[tokens[i]] + pieces[tokens[i + 1]]);
      if (id !== undefined && scores[id] > bestScore) {
        best = i;
        bestScore = scores[id];
        bestId = id;
      }
    }
    if (best < 0) return tokens;
    tokens.splice(best, 2, bestId);
  }
}
