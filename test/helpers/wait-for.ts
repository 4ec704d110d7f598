// Polling against a deadline, for tests that wait on something asynchronous (a socket closing, a timer
// firing in the code under test). A fixed sleep is either too short on a busy machine (a flaky failure) or
// longer than needed (a slow suite); this returns as soon as the condition holds and fails with a message
// naming what was awaited when it does not hold in time.

export interface WaitForOptions {
  /** What is being waited for, in words: it becomes the error message on timeout. */
  what: string;
  /** Deadline from the call, in ms (default 10 s: generous, since a passing test returns at once). */
  timeoutMs?: number;
  /** Time between polls, in ms (default 10). */
  intervalMs?: number;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned) or the deadline passes (then throws
 * `timed out after N ms waiting for <what>`, with the last value or error). A throwing predicate counts as
 * "not yet".
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, options: WaitForOptions): Promise<T> {
  const { what, timeoutMs = 10_000, intervalMs = 10 } = options;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** `promise`, or a rejection naming `what` if it has not settled within `timeoutMs` (default 10 s). */
export async function withinDeadline<T>(promise: Promise<T>, options: Omit<WaitForOptions, 'intervalMs'>): Promise<T> {
  const { what, timeoutMs = 10_000 } = options;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
