/**
 * The full model rebuilt from a split directory: input → middle → output parts run back to back in one process,
 * as a CausalLm. `hat split` verified this composition against the source model (logits and every KV tensor), so
 * it is the reference wherever only the split exists — the cloud-only and device-only baselines, and the
 * adapter's training text and evaluation targets.
 */
import type { SplitManifest } from '../split/manifest.ts';
import type { CausalLm, StepOutput } from './full-model.ts';
import { lastRow, type KvState, type PartRunner } from './part-runner.ts';
import type { SessionOptions } from './session.ts';
import { openAll, openPart } from './split-dir.ts';

export interface SplitRunners {
  input: PartRunner;
  middle: PartRunner;
  output: PartRunner;
}

export type ComposedState = [KvState, KvState, KvState];

export class ComposedModel implements CausalLm {
  readonly parts: SplitRunners;
  readonly vocabSize: number;
  private readonly outputHasCache: boolean;

  constructor(parts: SplitRunners, manifest: SplitManifest) {
    this.parts = parts;
    this.outputHasCache = manifest.kv.output.length > 0;
    const vocab = parts.output.session.outputs.find((o) => o.name === 'logits')?.shape.at(-1);
    this.vocabSize = typeof vocab === 'number' ? vocab : (manifest.model?.vocabSize ?? 0);
  }

  static async open(splitDir: string, manifest: SplitManifest, options: SessionOptions = {}): Promise<ComposedModel> {
    const [input, middle, output] = await openAll(
      (['input', 'middle', 'output'] as const).map((name) => () => openPart(splitDir, manifest, name, options)),
    );
    return new ComposedModel({ input, middle, output }, manifest);
  }

  get length(): number {
    return this.parts.input.length;
  }

  async step(ids: readonly number[], options: { lastOnly?: boolean } = {}): Promise<StepOutput> {
    const { input, middle, output } = this.parts;
    const h = await input.step({ ids }, ids.length);
    const m = await middle.step({ hidden: h.data }, ids.length);
    if (this.outputHasCache) return output.step({ hidden: m.data }, ids.length);
    // An output part without decoder layers holds no cache: the head runs on the last position only when asked.
    const logits = options.lastOnly
      ? await output.step({ hidden: lastRow(m) }, 1)
      : await output.step({ hidden: m.data }, ids.length);
    output.truncate(0);
    return logits;
  }

  truncate(length: number): void {
    this.parts.input.truncate(length);
    this.parts.middle.truncate(length);
    if (this.outputHasCache) this.parts.output.truncate(length);
    else this.parts.output.truncate(0);
  }

  snapshot(): ComposedState {
    return [this.parts.input.snapshot(), this.parts.middle.snapshot(), this.parts.output.snapshot()];
  }

  restore(state: ComposedState): void {
    this.parts.input.restore(state[0]);
    this.parts.middle.restore(state[1]);
    this.parts.output.restore(state[2]);
  }

  async release(): Promise<void> {
    for (const part of [this.parts.input, this.parts.middle, this.parts.output]) await part.session.release();
  }
}
