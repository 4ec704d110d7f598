/**
 * The fleet benchmark's recordings: real device sessions of the split itself (its device parts in this process,
 * one session at a time against a real serve-cloud, so each is a solo run), through the same EMULATED link the
 * replay uses, one per held-out prompt and mode; or recordings read back from a folder (`--recordings`).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { HatError } from '../../errors.ts';
import { describeLink, type LinkSpec } from '../../runtime/link.ts';
import type { WireDTypeName } from '../../runtime/protocol/frame.ts';
import { manifestHash, readManifest } from '../../runtime/split-dir.ts';
import { readRecording, SessionRecorder, type SessionRecording } from '../../runtime/device/session-recorder.ts';
import { DeviceRunner } from '../device-runner.ts';
import type { BenchPrompt } from '../prompts.ts';
import type { Scenario } from '../scenarios.ts';

export interface RecordOptions {
  splitDir: string;
  cloudUrl: string;
  link: LinkSpec;
  wire: WireDTypeName;
  draftThreshold: 'auto' | number;
  maxDraft: number;
  parallelBranches: number;
  threads?: number;
  maxNewTokens: number;
}

export interface RecordJob {
  /** The recording's mode name ('hat', 'u-shape', 'hat-eta0', …). */
  mode: string;
  scenario: Scenario;
  /** Overrides the device's draft threshold for this mode (η = 0: every round drafts --max-draft). */
  draftThreshold?: 'auto' | number;
}

/** Records every prompt in every job's mode, after one discarded warm-up session per mode. */
export async function recordSessions(
  options: RecordOptions,
  jobs: readonly RecordJob[],
  prompts: readonly BenchPrompt[],
  onSession: (done: number, total: number, what: string) => void,
): Promise<SessionRecording[]> {
  const manifest = readManifest(options.splitDir);
  const runner = await DeviceRunner.open({
    splitDir: options.splitDir,
    cloudUrl: options.cloudUrl,
    link: options.link,
    wire: options.wire,
    draftThreshold: options.draftThreshold,
    maxDraft: options.maxDraft,
    parallelBranches: options.parallelBranches,
    threads: options.threads,
    seed: 1,
  });
  const shortest = prompts.reduce((a, b) => (b.ids.length < a.ids.length ? b : a));
  const recordings: SessionRecording[] = [];
  const total = jobs.length * (prompts.length + 1);
  let done = 0;
  for (const job of jobs) {
    await runner.run(job.scenario, shortest, options.maxNewTokens, { draftThreshold: job.draftThreshold });
    onSession(++done, total, `warm-up ${job.mode}`);
    for (const prompt of prompts) {
      const recorder = new SessionRecorder();
      const extras = { recorder, draftThreshold: job.draftThreshold };
      const record = await runner.run(job.scenario, prompt, options.maxNewTokens, extras);
      if (record.error) {
        throw new HatError(record.errorCode ?? 'NETWORK', `recording a ${job.mode} session failed: ${record.error}`);
      }
      const recording = recorder.finish({
        manifestHash: manifestHash(manifest),
        hiddenSize: manifest.hidden.size,
        mode: job.mode,
        promptTokens: prompt.ids.length,
        link: describeLink(options.link),
      });
      if (recording.unreplayable) {
        throw new HatError('INTERNAL', `a recorded ${job.mode} session cannot be replayed: ${recording.unreplayable}`);
      }
      recordings.push(recording);
      onSession(++done, total, `${job.mode}, ${prompt.ids.length}-token prompt`);
    }
  }
  return recordings;
}

/**
 * Recording file names (recordingFileNames) in the order the recording run replayed them: by mode, prompt length and
 * index as numbers. Plain string order put `hat-128-0` before `hat-64-0` (and `-10` before `-2`), so a replay of a
 * recording run met its prompts in another order than that run did, and the spread's pairing of runs broke.
 */
export function inRecordingOrder(files: readonly string[]): string[] {
  return [...files].sort(new Intl.Collator('en', { numeric: true }).compare);
}

/** Every recording in `dir` (or its `recordings/` folder), in the order the run that recorded them replayed them. */
export function readRecordings(dir: string): SessionRecording[] {
  const folder = existsSync(join(dir, 'recordings')) ? join(dir, 'recordings') : dir;
  if (!existsSync(folder)) {
    throw new HatError(
      'FILE_NOT_FOUND',
      `recordings folder ${dir} does not exist`,
      "give a fleet run's --out (or its recordings folder), or drop --recordings to record",
    );
  }
  if (!statSync(folder).isDirectory()) {
    throw new HatError(
      'BAD_OPTION',
      `--recordings ${dir} is a file, not a folder`,
      "give a fleet run's --out (or its recordings folder), or drop --recordings to record",
    );
  }
  const files = inRecordingOrder(readdirSync(folder).filter((f) => f.endsWith('.json')));
  if (!files.length) {
    throw new HatError(
      'FILE_NOT_FOUND',
      `${folder} holds no recording (*.json)`,
      'give the --out folder of an earlier `hat bench --fleet`',
    );
  }
  return files.map((f) => readRecording(join(folder, f)));
}

/** File names for recordings within --out: recordings/<mode>-<prompt tokens>-<n>.json. */
export function recordingFileNames(recordings: readonly SessionRecording[]): string[] {
  const seen = new Map<string, number>();
  return recordings.map((r) => {
    const key = `${r.mode}-${r.promptTokens}`;
    const n = seen.get(key) ?? 0;
    seen.set(key, n + 1);
    return `recordings/${key}-${n}.json`;
  });
}
