/**
 * All-or-nothing output: everything is written into a hidden staging directory beside --out and renamed into
 * place at the end (same filesystem, so the rename is atomic), so a failure leaves no half-written split. An
 * output being replaced (--force) is moved aside first and deleted only once the new one is in place, and never
 * when it holds the files being read.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { HatError } from '../errors.ts';
import { isWithin } from '../file-checks.ts';

export interface Staging {
  /** Where to write. */
  dir: string;
  /** The final location. */
  target: string;
  publish(): Promise<void>;
  discard(): Promise<void>;
}

/**
 * Whether --out may be written: checked before any work (a big model takes minutes to load and verify) and again
 * when staging. `inputs`: files the run reads (the model); --out may not hold them, even with --force.
 */
export function assertOutputTarget(out: string, replace: boolean, inputs: readonly string[] = []): void {
  const target = resolve(out);
  const held = inputs.find((input) => isWithin(input, target));
  if (held) {
    throw new HatError(
      'OUTPUT_EXISTS',
      `--out ${out} holds ${held}, which this run reads: replacing it would delete it`,
      'choose an --out outside the model folder',
    );
  }
  if (!existsSync(dirname(target))) {
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot write --out ${out}: its parent folder ${dirname(target)} does not exist`,
      'create it first, or choose another --out',
    );
  }
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) {
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} exists and is not a directory`,
        'choose a directory path for --out',
      );
    }
    if (readdirSync(target).length > 0 && !replace) {
      throw new HatError(
        'OUTPUT_EXISTS',
        `--out ${out} exists and is not empty`,
        'choose another --out, or pass --force to replace it',
      );
    }
  }
}

/**
 * Staging folders not yet published or discarded. An interrupt (Ctrl-C) or SIGTERM during a long split would
 * otherwise leave a hidden half-written folder beside --out: they are removed, then the signal is raised again
 * so the process ends as it would have without hat's handler. An interrupt during a publish (a few renames) waits
 * for it to finish instead: the process then ends with the complete output in place, never with the staged one
 * left under its hidden name or the old one set aside.
 */
const liveStagings = new Set<string>();
const INTERRUPTS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let publishing = 0;
let deferredSignal: NodeJS.Signals | undefined;

function onInterrupt(signal: NodeJS.Signals): void {
  if (publishing > 0) deferredSignal ??= signal;
  else removeLiveStagingsAndReraise(signal);
}

function removeLiveStagingsAndReraise(signal: NodeJS.Signals): void {
  for (const dir of liveStagings) removeOnInterrupt(dir);
  liveStagings.clear();
  for (const other of INTERRUPTS) process.off(other, onInterrupt);
  process.kill(process.pid, signal);
}

/**
 * Writes already under way on libuv's threads can still add a file while the folder is removed (rmdir then fails
 * with ENOTEMPTY, and the split's interrupt test saw the process end with code 1, not by the signal): tried again a
 * few times, and never thrown, since the signal must still end the process.
 */
function removeOnInterrupt(dir: string): void {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return rmSync(dir, { recursive: true, force: true });
    } catch {
      // the next attempt removes what arrived meanwhile
    }
  }
}

/**
 * Makes a staging folder with `create` and tracks it. The handlers go in first: a signal that arrived while none was
 * installed would end the process by its default action at once, leaving the folder just made; one that arrives
 * after they are in waits for this synchronous step, then finds the folder tracked.
 */
function createTracked(create: () => string): string {
  if (liveStagings.size === 0) for (const signal of INTERRUPTS) process.on(signal, onInterrupt);
  try {
    const dir = create();
    liveStagings.add(dir);
    return dir;
  } catch (error) {
    if (liveStagings.size === 0) for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
    throw error;
  }
}

function untrack(dir: string): void {
  if (!liveStagings.delete(dir) || liveStagings.size > 0) return;
  for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
}

/** Moves the staged folder to `target`, replacing an existing output only once the new one is in place. */
async function moveIntoPlace(dir: string, target: string): Promise<void> {
  await chmod(dir, 0o755); // mkdtemp creates it private; the published split is an ordinary folder
  if (!existsSync(target)) return rename(dir, target);
  // The old output goes aside, the new one in, and only then is the old one deleted: a failure on the way
  // leaves one complete output in place, never a half-deleted one.
  const aside = await mkdtemp(join(dirname(target), `.${basename(target)}.hat-old-`));
  const old = join(aside, 'old');
  try {
    await rename(target, old);
    try {
      await rename(dir, target);
    } catch (error) {
      await rename(old, target);
      throw error;
    }
  } catch (error) {
    // Empty by now, unless the old output could not be put back: then it stays there, never deleted.
    await rmdir(aside).catch(() => undefined);
    throw error;
  }
  await rm(aside, { recursive: true, force: true });
}

export async function createStaging(out: string, replace: boolean, inputs: readonly string[] = []): Promise<Staging> {
  assertOutputTarget(out, replace, inputs);
  const target = resolve(out);
  let dir: string;
  try {
    dir = createTracked(() => mkdtempSync(join(dirname(target), `.${basename(target)}.hat-partial-`)));
  } catch (error) {
    // A missing parent was refused by assertOutputTarget; what is left is a folder that cannot be written.
    const code = (error as NodeJS.ErrnoException).code;
    throw new HatError(
      'OUTPUT_EXISTS',
      `cannot write --out ${out}: ${dirname(target)} is not writable (${code})`,
      'choose a writable location for --out',
    );
  }
  return {
    dir,
    target,
    async publish() {
      publishing += 1;
      try {
        await moveIntoPlace(dir, target);
      } catch (error) {
        await rm(dir, { recursive: true, force: true }); // what is left of a publish that failed is not an output
        throw error;
      } finally {
        publishing -= 1;
        untrack(dir);
        const signal = deferredSignal;
        if (signal && publishing === 0) {
          deferredSignal = undefined;
          removeLiveStagingsAndReraise(signal);
        }
      }
    },
    async discard() {
      await rm(dir, { recursive: true, force: true });
      untrack(dir);
    },
  };
}
