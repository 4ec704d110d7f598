/**
 * Load on one serve-cloud from N EMULATED devices in this process: sessions arrive as a Poisson process at R per
 * second for S seconds (each waits for a free device), or, closed loop, every device starts its next session when
 * its last one ended. Each session replays the next recording of a seeded shuffle (the same order for every run
 * with the same seed), through its own WebSocket session and emulated link (replay.ts). Sessions still running
 * `drainMs` after the window are stopped and count as failed.
 */
import { setMaxListeners } from 'node:events';
import { seededUniform } from '../../runtime/sampling.ts';
import type { LinkSpec } from '../../runtime/link.ts';
import type { SessionRecording } from '../../runtime/device/session-recorder.ts';
import { replaySession, type ReplayOptions, type ReplayOutcome } from './replay.ts';

export type LoadShape = { kind: 'poisson'; rate: number } | { kind: 'closed-loop' };

export interface LoadOptions {
  url: string;
  recordings: readonly SessionRecording[];
  devices: number;
  load: LoadShape;
  durationMs: number;
  drainMs: number;
  link: LinkSpec;
  seed: number;
  token?: string;
  /** The devices follow the cloud's rows advice (replay.ts, SIMULATION of drafting fewer). */
  advice?: ReplayOptions['advice'];
  onSessionDone?: (done: number) => void;
}

export interface SessionOutcome extends ReplayOutcome {
  /**
   * Its place in the run's arrival order, from 0 (closed loop: in the order devices started sessions). A Poisson
   * run's i-th arrival replays the same recording at the same time in every run with the same seed.
   */
  arrival: number;
  /** performance.now() when the session arrived and when an emulated device took it. */
  arrivedAt: number;
  takenAt: number;
  device: number;
}

export interface LoadRun {
  /** performance.now() at the window's start; the window is [startedAt, startedAt + durationMs). */
  startedAt: number;
  durationMs: number;
  /** When the last session ended (the drain included). */
  endedAt: number;
  sessions: SessionOutcome[];
}

/** A seeded permutation of 0..n-1, repeated: which recording each successive session replays. */
function recordingOrder(n: number, seed: number): () => number {
  const random = seededUniform(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  let next = 0;
  return () => order[next++ % n];
}

export async function runLoad(options: LoadOptions): Promise<LoadRun> {
  const { devices, durationMs } = options;
  const nextRecording = recordingOrder(options.recordings.length, options.seed);
  const stop = new AbortController();
  setMaxListeners(devices + 8, stop.signal); // one listener per live session: N devices is not a leak
  const sessions: SessionOutcome[] = [];
  const free = Array.from({ length: devices }, (_, i) => devices - 1 - i);
  const waiting: Array<(device: number) => void> = [];
  let started = 0;
  const takeDevice = () =>
    new Promise<number>((resolve) => {
      const device = free.pop();
      if (device !== undefined) resolve(device);
      else waiting.push(resolve);
    });
  const release = (device: number) => {
    const next = waiting.shift();
    if (next) next(device);
    else free.push(device);
  };
  const replay = async (device: number, arrivedAt: number): Promise<void> => {
    // Devices are taken in arrival order (waiting sessions first come, first served), so the sessions started so far
    // number the arrival, as they pick its recording.
    const arrival = started++;
    const recording = options.recordings[nextRecording()];
    const takenAt = performance.now();
    const seed = options.seed * 100_003 + arrival * 7 + device;
    const outcome = await replaySession(recording, {
      url: options.url,
      link: options.link,
      seed,
      token: options.token,
      signal: stop.signal,
      advice: options.advice,
    });
    sessions.push({ ...outcome, arrival, arrivedAt, takenAt, device });
    options.onSessionDone?.(sessions.length);
  };

  const startedAt = performance.now();
  const end = startedAt + durationMs;
  const drainTimer = setTimeout(() => stop.abort(), durationMs + options.drainMs);
  const runs: Array<Promise<void>> = [];
  try {
    if (options.load.kind === 'poisson') {
      const random = seededUniform(options.seed);
      const meanGapMs = 1000 / options.load.rate;
      for (let at = -Math.log(1 - random()) * meanGapMs; at < durationMs; at += -Math.log(1 - random()) * meanGapMs) {
        const due = startedAt + at;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
        runs.push(
          takeDevice().then(async (device) => {
            try {
              await replay(device, due);
            } finally {
              release(device);
            }
          }),
        );
      }
    } else {
      // Closed loop: devices start spread over the first quarter of the window (at most 1 s), then back to back.
      const random = seededUniform(options.seed);
      const spread = Math.min(1000, durationMs / 4);
      for (let device = 0; device < devices; device++) {
        const offset = random() * spread;
        runs.push(
          (async () => {
            await new Promise((resolve) => setTimeout(resolve, offset));
            while (performance.now() < end) await replay(device, performance.now());
          })(),
        );
      }
    }
    await Promise.all(runs);
  } finally {
    clearTimeout(drainTimer);
  }
  return { startedAt, durationMs, endedAt: performance.now(), sessions };
}
