/**
 * The device's three caches — input part, adapter, and the output part when it owns decoder layers — moved
 * together: a snapshot / restore for parallel-drafting branches, and one rollback to the committed length after
 * each verification round.
 */
import type { KvState } from '../part-runner.ts';
import type { DeviceParts } from './device-parts.ts';

export interface CacheState {
  input: KvState;
  adapter?: KvState;
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

  snapshot(): CacheState {
    return {
      input: this.parts.input.snapshot(),
      adapter: this.withAdapter ? this.parts.adapter?.snapshot() : undefined,
    };
  }

  restore(state: CacheState): void {
    this.parts.input.restore(state.input);
    if (state.adapter) this.parts.adapter!.restore(state.adapter);
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
