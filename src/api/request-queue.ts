/**
 * One generation at a time on the device, the others waiting in order: the device parts hold one KV cache each
 * and a device has few cores, so two generations at once would only slow each other down. The queue is bounded;
 * a request that finds it full is refused (BUSY) instead of waiting behind an unbounded backlog.
 */
import { HatError } from '../errors.ts';

interface Waiter {
  resolve(release: () => void): void;
  reject(error: unknown): void;
}

/** Thrown by `acquire` when the request's signal aborts while it waits. */
export const CANCELLED_WHILE_QUEUED = Symbol('cancelled while queued');

export class RequestQueue {
  private busy = false;
  private readonly waiters: Waiter[] = [];

  constructor(readonly maxWaiting: number) {}

  get running(): boolean {
    return this.busy;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves with a release function once it is this request's turn (`unbounded`: even past the bound). */
  acquire(signal?: AbortSignal, options: { unbounded?: boolean } = {}): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(CANCELLED_WHILE_QUEUED);
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve(this.releaser());
    }
    if (this.waiters.length >= this.maxWaiting && !options.unbounded) {
      return Promise.reject(
        new HatError(
          'BUSY',
          `the device is generating and ${this.waiters.length} more request(s) are queued (the most it queues)`,
          'retry later, or start the device with a longer queue',
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        reject,
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(CANCELLED_WHILE_QUEUED);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.resolve(this.releaser());
      else this.busy = false;
    };
  }
}
