/**
 * Training data for the adapter: batches of (h_K, h_N, the full model's next token, positions) made on the
 * fly. A source never holds more than the batch it is producing; `bufferedSource` may keep whole passes in
 * memory, but only under a byte budget, so memory stays bounded whatever the corpus size.
 */
import { HatError } from '../errors.ts';
import {
  adapterForward,
  type AdapterParams,
  type AttentionAdapterConfig,
  type SequenceBatch,
} from './attention-adapter.ts';
import type { MatMulEngine } from './matmul.ts';
import { topTokens, type OutputHead } from './output-head.ts';
import { normalArray, seededRandom } from '../random.ts';

export interface PairBatch extends SequenceBatch {
  /** h_N, the hidden state the middle part produces, [batch·seq, hidden]. */
  target: Float32Array;
  /** The full model's greedy next token at each row, [batch·seq]; negative = none. */
  targetTokens: Int32Array;
}

export interface PairSource {
  readonly hidden: number;
  /** Batches in one pass: sizes the learning-rate schedule and the progress ETA. */
  readonly batchesPerPass: number;
  /** One pass over the data; each call starts a new pass. */
  batches(): AsyncIterable<PairBatch>;
}

export function batchBytes(batch: PairBatch): number {
  return batch.hidden.byteLength + batch.target.byteLength + batch.targetTokens.byteLength + batch.positions.length * 8;
}

/**
 * Replays passes from memory when the whole pass fits in `maxBytes` (saving the recomputation of the split
 * parts each epoch), and otherwise keeps streaming from the source.
 */
export function bufferedSource(source: PairSource, maxBytes: number): PairSource {
  let stored: PairBatch[] | undefined;
  let tooLarge = false;
  return {
    hidden: source.hidden,
    batchesPerPass: source.batchesPerPass,
    async *batches() {
      if (stored) {
        yield* stored;
        return;
      }
      const collecting: PairBatch[] = [];
      let bytes = 0;
      for await (const batch of source.batches()) {
        if (!tooLarge) {
          bytes += batchBytes(batch);
          if (bytes > maxBytes) {
            tooLarge = true;
            collecting.length = 0;
          } else {
            collecting.push(batch);
          }
        }
        yield batch;
      }
      if (!tooLarge) stored = collecting;
    },
  };
}

export interface TeacherSourceOptions {
  config: AttentionAdapterConfig;
  /** The adapter whose outputs are the targets: a learnable synthetic problem. */
  teacher: AdapterParams;
  head: OutputHead;
  batch: number;
  seq: number;
  batchesPerPass: number;
  seed: number;
  /** Scale of the random inputs h_K. */
  inputScale?: number;
  engine: MatMulEngine;
}

/**
 * Synthetic pairs for tests and benchmarks: random h_K, h_N = teacher(h_K), tokens = argmax head(h_N). Every
 * pass yields the same batches (a fixed data set), generated again rather than stored.
 */
export function teacherSource(options: TeacherSourceOptions): PairSource {
  const { config, batch, seq } = options;
  if (options.head.normWeight.length !== config.hidden) {
    throw new HatError(
      'BAD_OPTION',
      `head width ${options.head.normWeight.length} differs from the adapter's ${config.hidden}`,
    );
  }
  return {
    hidden: config.hidden,
    batchesPerPass: options.batchesPerPass,
    async *batches() {
      const random = seededRandom(options.seed);
      for (let index = 0; index < options.batchesPerPass; index++) {
        const hidden = normalArray(random, batch * seq * config.hidden, options.inputScale ?? 1);
        const positions = Int32Array.from({ length: batch * seq }, (_, i) => i % seq);
        const input: SequenceBatch = { batch, seq, hidden, positions };
        const target = (await adapterForward(options.teacher, config, input, options.engine)).output;
        const { tokens } = await topTokens(options.head, target, options.engine);
        yield { ...input, target, targetTokens: tokens };
      }
    },
  };
}

/** A source over batches already in memory (tests, benchmarks, small held-out sets). */
export function arraySource(batches: PairBatch[], hidden: number): PairSource {
  return {
    hidden,
    batchesPerPass: batches.length,
    async *batches() {
      yield* batches;
    },
  };
}

export async function collect(source: PairSource): Promise<PairBatch[]> {
  const out: PairBatch[] = [];
  for await (const batch of source.batches()) out.push(batch);
  return out;
}
