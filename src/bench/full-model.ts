/**
 * The unsplit model for the cloud-only and device-only baselines: the split's input, middle and output parts
 * run back to back in one process. `hat split` verified this composition equal to the source model (logits
 * and every KV tensor), and it needs nothing beyond the split directory. Greedy decoding.
 */
import type { SplitManifest } from '../split/manifest.ts';
import { lastRow, type KvState, type PartRunner } from '../runtime/part-runner.ts';
import { openPart } from '../runtime/split-dir.ts';
import { argmax } from '../runtime/sampling.ts';

export type FullModelState = [KvState, KvState, KvState];

export class ComposedFullModel {
  private constructor(private readonly parts: [PartRunner, PartRunner, PartRunner], private readonly outputHasCache: boolean) {}

  static async open(splitDir: string, manifest: SplitManifest, threads?: number): Promise<ComposedFullModel> {
    const options = { threads };
    const parts = await Promise.all((['input', 'middle', 'output'] as const).map((name) => openPart(splitDir, manifest, name, options)));
    return new ComposedFullModel(parts as [PartRunner, PartRunner, PartRunner], manifest.kv.output.length > 0);
  }

  /** Runs `ids` on top of the cache and returns the greedy next token. */
  async next(ids: readonly number[]): Promise<number> {
    const [input, middle, output] = this.parts;
    const h = await input.step({ ids }, ids.length);
    const m = await middle.step({ hidden: h.data }, ids.length);
    // An output part without decoder layers needs only the last position.
    const logits = this.outputHasCache ? await output.step({ hidden: m.data }, ids.length) : await output.step({ hidden: lastRow(m) }, 1);
    return argmax(lastRow(logits));
  }

  reset(): void {
    for (const part of this.parts) part.truncate(0);
  }

  snapshot(): FullModelState {
    return this.parts.map((p) => p.snapshot()) as FullModelState;
  }

  restore(state: FullModelState): void {
    this.parts.forEach((p, i) => p.restore(state[i]));
  }
}

/** Greedy generation of exactly `maxNewTokens` tokens (the stop token is not special in a benchmark). */
export async function generateGreedy(model: ComposedFullModel, prompt: readonly number[], maxNewTokens: number, onToken: (id: number) => void): Promise<void> {
  let next = await model.next(prompt);
  onToken(next);
  for (let i = 1; i < maxNewTokens; i++) {
    next = await model.next([next]);
    onToken(next);
  }
}
