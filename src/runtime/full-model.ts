/**
 * The abstract model that generation runs over — "feed these ids at the next positions, get their logits" —
 * and its plain implementation: one ONNX decoder with its KV cache. The split runtime provides the same
 * interface over input part + cloud/adapter + output part, so one generation loop serves both.
 */
import { dirname } from 'node:path';
import { HatError } from '../errors.ts';
import { kvLayoutOf } from './kv-cache.ts';
import { configVocabSize } from './model-config.ts';
import { logitsOutputOf } from '../split/kv-names.ts';
import { PartRunner, type StepOutput } from './part-runner.ts';
import { createSession, type SessionOptions } from './session.ts';

export type { StepOutput } from './part-runner.ts';

export interface CausalLm {
  readonly vocabSize: number;
  /** Positions already in the cache; the next ids get positions length, length+1, … */
  readonly length: number;
  /**
   * Runs `ids` on top of the cache, appends them to it and returns their logits, [ids.length, vocab] — or, with
   * `lastOnly`, at least the last position's (a model may then skip the head on the others).
   */
  step(ids: readonly number[], options?: { lastOnly?: boolean }): Promise<StepOutput>;
  /** Keeps the first `length` cached positions (speculative rollback, or a fresh start with 0). */
  truncate(length: number): void;
}

export class OnnxCausalLm implements CausalLm {
  readonly vocabSize: number;
  private readonly runner: PartRunner;

  private constructor(runner: PartRunner, vocabSize: number) {
    this.runner = runner;
    this.vocabSize = vocabSize;
  }

  static async open(modelPath: string, options: SessionOptions = {}): Promise<OnnxCausalLm> {
    const session = await createSession(modelPath, options);
    const names = session.inputNames;
    // attention_mask and position_ids are fed when declared (model-builder exports have no position_ids; ALiBi
    // models none either), each in the integer type the model declares (PartRunner).
    if (!names.includes('input_ids')) {
      throw new HatError(
        'NOT_A_DECODER',
        `${modelPath} has no 'input_ids' input`,
        'hat expects the Optimum decoder layout (input_ids, attention_mask, position_ids, past_key_values.N.*)',
      );
    }
    const logitsName = logitsOutputOf(session.outputNames);
    const logits = session.outputs.find((o) => o.name === logitsName);
    if (!logits) {
      throw new HatError(
        'NOT_A_DECODER',
        `${modelPath} has no logits output (one named 'logits', or one output besides present.*)`,
        'export the decoder with its LM head',
      );
    }
    // Some exports lose the vocabulary dimension in shape inference (e.g. after logit soft-capping):
    // config.json has it.
    const vocab = logits.shape[logits.shape.length - 1];
    const vocabSize = typeof vocab === 'number' ? vocab : configVocabSize(dirname(modelPath));
    if (vocabSize === undefined) {
      throw new HatError(
        'UNSUPPORTED_MODEL',
        `${modelPath}: the logits' vocabulary dimension is symbolic and no config.json gives vocab_size`,
        "put the model's config.json beside it",
      );
    }
    const runner = PartRunner.fromSession(session, {
      idsInput: 'input_ids',
      output: logits.name,
      kv: kvLayoutOf(session).pairs,
    });
    return new OnnxCausalLm(runner, vocabSize);
  }

  get length(): number {
    return this.runner.length;
  }

  step(ids: readonly number[]): Promise<StepOutput> {
    if (ids.length === 0) throw new HatError('INTERNAL', 'a step needs at least one token id');
    return this.runner.step({ ids }, ids.length);
  }

  truncate(length: number): void {
    this.runner.truncate(length);
  }

  async release(): Promise<void> {
    await this.runner.session.release();
  }
}
