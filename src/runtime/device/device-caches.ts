/**
 * The device's caches — input part, adapter, and the output part when it owns decoder layers (its verified cache
 * and the drafts' copy of it) — moved together: a snapshot / restore for parallel-drafting branches, and one
 * rollback to the committed length after each verification round.
 */
import type { KvState } from '../part-runner.ts';
import type { DeviceParts } from './device-parts.ts';

export interface CacheState {
  input: KvState;
  adapter?: KvState;
  /** The drafting copy of the output part's cache, when the output part has decoder layers (J > 0). */
  draftOutput?: KvState;
}

export class DeviceCaches {
  /** `withAdapter`: the adapter's cache moves with the input part's (while drafting). */
  constructor(
    private readonly parts: DeviceParts,
    readonly withAdapter: boolean,
  ) {}

  /** Whether the output part holds a cache (decoder layers on the device's output side). */
  get outputHasCache(): boolean {
    return this.parts.manifest.kv.output.length > 0;
  }

  /** Whether drafts run the output part's layers on a cache of their own (J > 0). */
  private get draftsOwnOutput(): boolean {
    return this.withAdapter && this.parts.draftOutput !== this.parts.output;
  }

  snapshot(): CacheState {
    return {
      input: this.parts.input.snapshot(),
      adapter: this.withAdapter ? this.parts.adapter?.snapshot() : undefined,
      draftOutput: this.draftsOwnOutput ? this.parts.draftOutput.snapshot() : undefined,
    };
  }

  restore(state: CacheState): void {
    this.parts.input.restore(state.input);
    if (state.adapter) this.parts.adapter!.restore(state.adapter);
    if (state.draftOutput) this.parts.draftOutput.restore(state.draftOutput);
  }

  /**
   * A new chain of drafts starts on the verified output cache: the drafting copy takes it, then grows with each
   * draft (adapter rows on top of the verified positions), as the adapter's cache does.
   */
  startDrafting(): void {
    if (this.draftsOwnOutput) this.parts.draftOutput.restore(this.parts.output.snapshot());
  }

  /**
   * Every part's cache emptied: a generation starts from nothing, whatever an earlier one on the same parts left
   * (a reused generator, a device serving prompt after prompt).
   */
  clear(): void {
    const { input, output, draftOutput, adapter } = this.parts;
    for (const part of new Set([input, output, draftOutput, adapter])) {
      part?.dropSnapshots();
      part?.truncate(0);
    }
  }

  /** The output part's verified cache keeps `length` positions. */
  rollbackOutput(length: number): void {
    if (this.outputHasCache) this.parts.output.truncate(length);
  }

  /**
   * Input part and adapter keep `length` positions. Every branch shares the prefix up to `length`, so whichever
   * state is loaded is right; the round's snapshots end here, so it is rolled back in place rather than copied.
   */
  rollbackDrafting(length: number): void {
    this.parts.input.dropSnapshots();
    this.parts.input.truncate(length);
    if (this.withAdapter && this.parts.adapter) {
      this.parts.adapter.dropSnapshots();
      this.parts.adapter.truncate(length);
    }
  }
}
