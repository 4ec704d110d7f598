/**
 * A short fleet run, as CI can afford it: real device sessions of a small split are recorded (hat and u-shape),
 * then replayed by 4 EMULATED devices in a closed loop against real serve-cloud processes, with batching on and
 * with --max-batch 1. Asserted: no errors anywhere, every replayed session committed what its recording did, and
 * every result equals the solo run's — byte for byte without batching, within fp32 rounding of a padded batch
 * (1e-5 relative to the largest value, fp32 wire) with it. Timings are printed, never asserted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { recordingFileNames } from '../../src/bench/fleet/record-sessions.ts';
import { runFleet, type FleetOptions } from '../../src/bench/fleet/run-fleet.ts';
import { frameHeader, recordingToJson } from '../../src/runtime/device/session-recorder.ts';
import { LINK_PROFILES } from '../../src/runtime/link.ts';
import { silentReporter } from '../../src/reporter.ts';
import { addIdentityAdapter, makeSmallSplit } from '../helpers/runtime-fixtures.ts';

const TITLE = '4 EMULATED devices replay recorded sessions on serve-cloud, batched and not: no errors, exact results';

/** The first test's split and its recordings, written as a fleet run's --out holds them, for the second test. */
let recorded: { split: string; recordingsDir: string } | undefined;

const options = (splitDir: string): FleetOptions => ({
  splitDir,
  devices: 4,
  loads: [{ kind: 'closed-loop' }],
  durationS: 2,
  drainS: 60,
  link: LINK_PROFILES.none,
  wire: 'fp32',
  draftThreshold: 'auto',
  maxDraft: 3,
  parallelBranches: 1,
  cores: 'shared',
  cloudWorkers: 1,
  promptLengths: [8, 24],
  promptsPerLength: 1,
  maxNewTokens: 12,
  sloTtftMs: 1000,
  sloTbtMs: 200,
  seed: 1,
  warmup: false,
});

test(TITLE, async (t) => {
  const { dir, split } = await makeSmallSplit();
  addIdentityAdapter(split);
  const report = await runFleet(options(split), silentReporter);
  const recordingsDir = join(dir, 'recordings');
  mkdirSync(recordingsDir);
  const names = recordingFileNames(report.recorded);
  report.recorded.forEach((r, i) => writeFileSync(join(dir, names[i]), recordingToJson(r)));
  recorded = { split, recordingsDir };

  assert.deepEqual(
    report.recorded.map((r) => [r.mode, r.promptTokens]),
    [
      ['hat', 8],
      ['hat', 24],
      ['u-shape', 8],
      ['u-shape', 24],
    ],
  );
  // fp32 rounding scales with the values: this random model's hidden states reach magnitudes of several units.
  let largest = 1;
  for (const recording of report.recorded) {
    for (const r of recording.results) for (const v of r.hidden) largest = Math.max(largest, Math.abs(v));
    assert.equal(recording.tokens, 12);
    assert.equal(recording.unreplayable, undefined);
    const rounds = recording.frames.filter((f) => (frameHeader(f).flags & 2) === 0);
    if (recording.mode === 'u-shape') assert.equal(rounds.length, 11, 'u-shape: one round trip per token');
  }
  assert.deepEqual(
    report.runs.map((r) => [r.mode, r.batching]),
    [
      ['hat', 'on'],
      ['u-shape', 'on'],
      ['hat', 'off'],
      ['u-shape', 'off'],
    ],
  );
  for (const run of report.runs) {
    const what = `${run.mode}, --max-batch ${run.maxBatch}`;
    t.diagnostic(
      `${what}: ${run.sessions.completed} sessions, ${run.throughputTokensPerSecond} tok/s, mean batch ` +
        `${run.cloud.meanBatchSessions}, results identical ${run.results.identical}/${run.results.checked}, max |Δ| ` +
        `${run.results.maxAbsDiff}`,
    );
    assert.equal(run.sessions.failed, 0, `${what}: ${run.errors.join(' | ')}`);
    assert.ok(run.sessions.completed >= 4, `${what}: every device ran a session`);
    assert.deepEqual(run.cloud.errors, {}, `${what}: the cloud sent no error frame`);
    // serve-cloud's default --kv-memory (half the free memory) leaves every batch of this run room.
    assert.equal(run.cloud.kvRefusedJoins, 0, `${what}: joins --kv-memory refused`);
    assert.ok(run.results.checked > 0);
    assert.equal(
      run.cloud.requests.prefillChunk + run.cloud.requests.verification,
      run.results.checked,
      `${what}: the cloud answered every frame the devices sent`,
    );
    if (run.batching === 'off') {
      assert.equal(run.maxBatch, 1);
      assert.equal(run.results.identical, run.results.checked, `${what}: results byte-identical to the recording`);
    } else {
      assert.ok(run.maxBatch > 1, `${what}: the batched cloud batches`);
      assert.ok(run.results.maxAbsDiff <= 1e-5 * largest, `${what}: results within 1e-5 × ${largest} of the recording`);
    }
  }
  assert.ok(
    report.notes.every((n) => !/failed|error frames/.test(n)),
    report.notes.join('\n'),
  );
  assert.ok(
    report.notes.every((n) => !/SIMULATION of drafting fewer/.test(n)),
    'the rows advice is off by default, so no round is split and the report claims no such simulation',
  );
});

test('--recordings made with other lengths size serve-cloud and the report', async (t) => {
  if (!recorded) return t.skip('the first test did not record');
  // Options that would size serve-cloud for 4 + 2 tokens: the recordings hold 24-token prompts and 12 new tokens.
  const report = await runFleet(
    {
      ...options(recorded.split),
      recordingsDir: recorded.recordingsDir,
      promptLengths: [4],
      maxNewTokens: 2,
      durationS: 1,
      rowsAdvice: 'always',
    },
    silentReporter,
  );
  assert.ok(
    report.notes.some((n) => /SIMULATION of drafting fewer/.test(n)),
    'advising, the report says hat devices follow the advice',
  );
  for (const run of report.runs) {
    assert.equal(run.sessions.failed, 0, `${run.mode}, batching ${run.batching}: ${run.errors.join(' | ')}`);
    assert.deepEqual(run.cloud.errors, {});
  }
  assert.match(report.header.prompts, /^4 recorded sessions from .* \(prompts of 8, 24 tokens, 12–12 tokens committed/);
});
