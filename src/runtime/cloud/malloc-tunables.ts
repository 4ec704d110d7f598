/**
 * glibc malloc settings for serve-cloud's process on Linux (read by glibc when the process starts, so they are set
 * by whoever starts it: hat's own launchers, deploy/kubernetes, or the shell — see the README).
 *
 * Why: by default glibc hands memory of large freed blocks back to the kernel, and every run of the middle part
 * allocates its outputs afresh (onnxruntime-node copies each output into a new buffer). When a run needs more than
 * the last one — pasts grow every round — that memory comes back as fresh pages, each faulted in. On this 2-core
 * VM a 16-session × 1,024-position one-row batch of a Qwen2.5-0.5B-shaped middle took 1.5–1.9 s per run with its
 * past growing by one position a run, against 0.2–0.3 s with these settings (or with a fixed shape).
 * - MALLOC_MMAP_THRESHOLD_: blocks up to 32 MiB (a 16-session layer's present is ~8 MiB) come from the heap, not
 *   from mmap, whose blocks go back to the kernel on free;
 * - MALLOC_TRIM_THRESHOLD_: free memory at the top of the heap is kept (up to 16 GiB) instead of trimmed;
 * - MALLOC_TOP_PAD_: the heap grows 1 GiB at a time (address space; pages are only backed once touched).
 * The price: the process keeps the memory it peaked at, which serve-cloud's --kv-memory already bounds.
 */
export const MALLOC_TUNABLES: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: String(32 * 2 ** 20),
  MALLOC_TRIM_THRESHOLD_: String(16 * 2 ** 30),
  MALLOC_TOP_PAD_: String(2 ** 30),
};

/** The tunables this process started without (none off Linux, where they mean nothing). */
export function missingMallocTunables(env: NodeJS.ProcessEnv = process.env): string[] {
  if (process.platform !== 'linux') return [];
  return Object.keys(MALLOC_TUNABLES).filter((name) => env[name] === undefined);
}

/** `env` with the tunables added where it does not set them. */
export function withMallocTunables(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...MALLOC_TUNABLES, ...env };
}
