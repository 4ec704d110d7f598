/**
 * The device's small language model on its own — input part → adapter → output part — as a CausalLm, so the
 * plain generation loop runs it (`hat generate <split-dir> --slm`) and `--fallback local` has a well-defined meaning.
 */
import { HatError } from '../../errors.ts';
import type { CausalLm, StepOutput } from '../full-model.ts';
import type { SessionOptions } from '../session.ts';
import { readManifest } from '../split-dir.ts';
import { openDeviceParts, type DeviceParts } from './device-parts.ts';

export class SlmCausalLm implements CausalLm {
  readonly vocabSize: number;
  private readonly parts: DeviceParts;

  constructor(parts: DeviceParts, vocabSize: number) {
    this.parts = parts;
    this.vocabSize = vocabSize;
  }

  static async open(splitDir: string, options: SessionOptions = {}): Promise<SlmCausalLm> {
    const manifest = readManifest(splitDir);
    if (manifest.kv.output.length > 0) {
      throw new HatError(
        'UNSUPPORTED_MODEL',
        'the small model needs an output part without decoder layers (split with --output-layers 0)',
      );
    }
    const parts = await openDeviceParts(splitDir, manifest, { ...options, withAdapter: true });
    const vocab = parts.output.session.outputs.find((o) => o.name === 'logits')?.shape.at(-1);
    return new SlmCausalLm(parts, typeof vocab === 'number' ? vocab : (manifest.model?.vocabSize ?? 0));
  }

  get length(): number {
    return this.parts.input.length;
  }

  async step(ids: readonly number[]): Promise<StepOutput> {
    const hidden = await this.parts.input.step({ ids }, ids.length);
    const adapted = await this.parts.adapter!.step({ hidden: hidden.data }, ids.length);
    return this.parts.output.step({ hidden: adapted.data }, ids.length);
  }

  truncate(length: number): void {
    this.parts.input.truncate(length);
    this.parts.adapter!.truncate(length);
  }

  async release(): Promise<void> {
    for (const runner of [this.parts.input, this.parts.output, this.parts.adapter!]) await runner.session.release();
  }
}
