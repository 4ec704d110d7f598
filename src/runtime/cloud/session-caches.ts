/**
 * Every session's middle-part KV cache on one worker. A cache is a contiguous state of its own (after a solo run)
 * or a view into the presents of the padded batch it last ran in (padded-batch.ts): keeping the view instead of
 * copying it out saves one full copy of every session's cache per batched round.
 *
 * A view keeps its whole batch's presents alive, padding and other sessions' rows included. So that memory stays
 * bounded, a batch's presents are kept only while the views into them cover at least half of their positions;
 * below that, the remaining views are copied out into caches of their own (`compact`) and the presents are freed.
 * Held KV memory is therefore at most twice what the sessions' caches need — and no more than they need once it
 * passes the worker's share of --kv-memory, which admitted the sessions at their need (middle-engine.ts copies every
 * view out then).
 */
import type { KvState } from '../part-runner.ts';
import { isView, materialize, type KvSource, type PresentView, type SharedPresent } from './padded-batch.ts';

/** A batch's presents are copied out of when views cover less than this share of their positions. */
export const MIN_SHARED_USE = 0.5;

export class SessionCaches {
  private readonly bySession = new Map<number, KvSource>();
  /** The sessions whose cache is a view into each batch's presents still held. */
  private readonly users = new Map<SharedPresent, Set<number>>();

  get(sessionId: number): KvSource | undefined {
    return this.bySession.get(sessionId);
  }

  /** Whether the session's cache is a view into a batch's presents (stateOf then copies it). */
  isView(sessionId: number): boolean {
    const source = this.bySession.get(sessionId);
    return source !== undefined && isView(source);
  }

  lengthOf(sessionId: number): number {
    return this.bySession.get(sessionId)?.length ?? 0;
  }

  /** The cache as a contiguous state (a view is copied, not moved): for a solo run or a caller outside the engine. */
  stateOf(sessionId: number, length?: number): KvState | undefined {
    const source = this.bySession.get(sessionId);
    if (!source || !isView(source)) return source;
    return materialize(source, length);
  }

  set(sessionId: number, source: KvSource): void {
    this.release(sessionId);
    this.bySession.set(sessionId, source);
    if (!isView(source)) return;
    const users = this.users.get(source.shared) ?? new Set();
    users.add(sessionId);
    this.users.set(source.shared, users);
  }

  delete(sessionId: number): void {
    this.release(sessionId);
    this.bySession.delete(sessionId);
  }

  /** Batches' presents held for views (for tests and accounting). */
  get sharedCount(): number {
    return this.users.size;
  }

  /** Cache positions held: every cache of its own, and every batch's presents kept for views, whole. */
  get heldPositions(): number {
    let held = 0;
    for (const source of this.bySession.values()) if (!isView(source)) held += source.length;
    for (const shared of this.users.keys()) held += shared.batch * shared.width;
    return held;
  }

  /**
   * Copies the views out of every batch's presents that they use less than `minUse` of (Infinity: of all), so those
   * presents are freed. Returns how many views were copied.
   */
  compact(minUse = MIN_SHARED_USE): number {
    let copied = 0;
    for (const [shared, sessions] of this.users) {
      const used = [...sessions].reduce((n, id) => n + this.bySession.get(id)!.length, 0);
      if (used >= minUse * shared.batch * shared.width) continue;
      for (const id of sessions) {
        this.bySession.set(id, materialize(this.bySession.get(id) as PresentView));
        copied++;
      }
      this.users.delete(shared);
    }
    return copied;
  }

  private release(sessionId: number): void {
    const old = this.bySession.get(sessionId);
    if (!old || !isView(old)) return;
    const users = this.users.get(old.shared)!;
    users.delete(sessionId);
    if (users.size === 0) this.users.delete(old.shared);
  }
}
