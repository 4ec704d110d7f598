/**
 * A generation's waits on the network — a cloud connection, a prompt chunk's result, a verification (and any
 * reconnect behind it) — end when its signal aborts (an API client that went away), so the request gives up its
 * slot at once instead of after the link answers. What was awaited goes on unobserved; its failure is handled.
 */
export const GENERATION_CANCELLED = Symbol('generation cancelled');

export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(GENERATION_CANCELLED);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(GENERATION_CANCELLED);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
