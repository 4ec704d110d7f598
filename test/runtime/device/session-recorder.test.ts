/**
 * `run-device --record`: the recording holds every forward frame exactly as it went on the wire, which results each
 * frame waited for, the device's time between them, and the tokens committed on each result; written to a file and
 * read back unchanged; replayed by an EMULATED device against a fresh serve-cloud it gets byte-identical results.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StartedCloud } from '../../../src/runtime/cloud/serve.ts';
import { runDevice, type RunDeviceOptions } from '../../../src/runtime/device/run-device.ts';
import { frameHeader, isPrefillFrame, readRecording } from '../../../src/runtime/device/session-recorder.ts';
import { FrameFlags } from '../../../src/runtime/protocol/frame.ts';
import type { HatError } from '../../../src/errors.ts';
import { LINK_PROFILES } from '../../../src/runtime/link.ts';
import { replaySession } from '../../../src/bench/fleet/replay.ts';
import { addIdentityAdapter, deviceOptions, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';

let cloud: StartedCloud;
let split: string;
const dir = mkdtempSync(join(tmpdir(), 'hat-rec-'));
const prompt = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17, 3, 3, 4];

before(async () => {
  ({ split } = await makeSmallSplit());
  addIdentityAdapter(split);
  cloud = await serveSplit(split, { maxSessions: 8, maxTokensPerFrame: 512, maxContext: 512 });
});
after(async () => {
  await cloud.server.stop();
  rmSync(dir, { recursive: true, force: true });
});

const device = (overrides: Partial<RunDeviceOptions>): RunDeviceOptions =>
  deviceOptions(split, cloud.port, { prompt: { ids: prompt }, ...overrides });

for (const speculative of [true, false]) {
  const mode = speculative ? 'HAT (chunks, drafts)' : 'U-shape (--no-draft, --chunk off)';
  test(`a recorded ${mode} session: exact frames, dependencies, commits; a replay gets the same results`, async () => {
    const file = join(dir, `${speculative}.json`);
    const wire: Uint8Array[] = [];
    const result = await runDevice(
      device({
        speculative,
        chunk: speculative ? 4 : 'off',
        record: file,
        recordUplink: (bytes) => wire.push(bytes.slice()),
      }),
    );
    const recording = readRecording(file);
    assert.equal(recording.unreplayable, undefined);
    assert.equal(recording.promptTokens, prompt.length);
    assert.equal(recording.wire, 'fp16');

    // Frames: byte for byte what went on the wire (hello and bye aside).
    const forwards = wire.filter((bytes) => bytes[6] === 3);
    assert.equal(recording.frames.length, forwards.length);
    recording.frames.forEach((frame, i) => assert.deepEqual(frame.bytes, forwards[i], `frame ${i}`));

    // Prompt chunks first (no dependency), then rounds, each after the result before it.
    const chunks = recording.frames.filter(isPrefillFrame).length;
    assert.equal(chunks, result.metrics.chunkSizes.length);
    assert.equal(recording.frames.length - chunks, result.metrics.rounds);
    let past = 0;
    const roundRows: number[] = [];
    recording.frames.forEach((frame, i) => {
      const header = frameHeader(frame);
      assert.equal(header.seq, i + 1);
      assert.ok(frame.deviceMs >= 0 && frame.sentMs >= (recording.frames[i - 1]?.sentMs ?? 0));
      if (i < chunks) {
        assert.equal(frame.after, -1);
        assert.equal(header.pastLength, past);
        past += header.nTokens;
        assert.ok(header.flags & FrameFlags.prefill);
      } else {
        assert.equal(frame.after, i - 1, `round ${i} waits for the result before it`);
        assert.ok(frame.sentMs >= recording.results[i - 1].arrivedMs);
        roundRows.push(header.nTokens);
      }
    });
    // A round verifies the pending token and its drafts: 1 to maxDraft + 1 rows in HAT mode (drafting at η = 0 it
    // drafts on some round), one without drafts.
    const { maxDraft } = device({});
    if (speculative) {
      assert.ok(
        roundRows.every((rows) => rows >= 1 && rows <= maxDraft + 1),
        `${roundRows}`,
      );
      assert.ok(
        roundRows.some((rows) => rows > 1),
        `${roundRows}`,
      );
    } else
      assert.ok(
        roundRows.every((rows) => rows === 1),
        `${roundRows}`,
      );

    // Commits: the first token on the prompt's last result, then each round's tokens on its own result.
    assert.equal(recording.tokens, result.ids.length);
    assert.deepEqual(
      recording.results[chunks - 1].commits.map((c) => c.count),
      [1],
    );
    recording.results.slice(0, chunks - 1).forEach((r) => assert.deepEqual(r.commits, []));
    recording.results.slice(chunks).forEach((r, k) => {
      assert.equal(r.commits.reduce((n, c) => n + c.count, 0) > 0, true, `round ${k} committed`);
      assert.ok(r.commits.every((c) => c.afterMs >= 0));
    });

    // An EMULATED device replays it solo on the same cloud: every result byte-identical to the recorded one.
    const url = `ws://127.0.0.1:${cloud.port}`;
    const replay = await replaySession(recording, { url, link: LINK_PROFILES.none, seed: 1 });
    assert.equal(replay.error, undefined);
    assert.equal(replay.checked, recording.frames.length);
    assert.equal(replay.identical, recording.frames.length);
    assert.equal(replay.tokens, result.ids.length);
    // Its decode rounds are every frame after the prompt's chunks, each timed from send to result.
    assert.equal(replay.decode.rounds, recording.frames.length - chunks);
    assert.ok(replay.decode.roundTripMs > 0 && replay.decode.deviceMs >= 0, JSON.stringify(replay.decode));
    // Its TTFT along the critical path: the segments add up to start → first token, the cloud's compute among them.
    const path = replay.ttftPath!;
    const firstToken = Math.min(...replay.commits.map((c) => c.at));
    const total = Object.values(path).reduce((n, ms) => n + ms, 0);
    assert.ok(Math.abs(total - (firstToken - replay.startedAt)) < 1e-6, JSON.stringify(path));
    assert.ok(path.cloudComputeMs > 0 && path.afterMs >= 0, JSON.stringify(path));
  });
}

test('a recording file that is not one is refused with the field that is wrong', () => {
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ format: 'hat-recording/1', frames: [] }));
  assert.throws(() => readRecording(file), /not a hat-recording\/1 recording: manifestHash/);
  writeFileSync(file, 'nope');
  assert.throws(() => readRecording(file), /is not JSON/);
});

const ADVICE_TEST =
  'a cloud that advises fewer rows: the device drafts within the advice; a replay that follows it splits the ' +
  'recorded rounds and gets the recorded rows back';
test(ADVICE_TEST, async () => {
  // A 2-row batch budget advised at any load: alone on the worker, a session is advised 2 rows (rows-advice.ts);
  // unadvised rounds carry 4.
  const advising = await serveSplit(split, {
    maxSessions: 8,
    maxTokensPerFrame: 512,
    maxContext: 512,
    maxBatchTokens: 2,
    rowsAdvice: 'always',
  });
  try {
    const file = join(dir, 'unadvised.json');
    const unadvised = await runDevice(device({ record: file }));
    const recording = readRecording(file);
    const rounds = recording.frames.filter((f) => !isPrefillFrame(f)).map((f) => frameHeader(f).nTokens);
    assert.ok(
      rounds.some((rows) => rows > 2),
      `unadvised rounds carry up to 4 rows: ${rounds}`,
    );
    assert.equal(unadvised.metrics.advisedRounds, 0);

    const advisedFile = join(dir, 'advised.json');
    const advised = await runDevice(
      deviceOptions(split, advising.port, { prompt: { ids: prompt }, record: advisedFile }),
    );
    assert.deepEqual(advised.ids, unadvised.ids, 'drafting fewer does not change greedy output');
    const advisedRounds = readRecording(advisedFile)
      .frames.filter((f) => !isPrefillFrame(f))
      .map((f) => frameHeader(f).nTokens);
    // Every round, the first too: it follows the advice on the prompt's last chunk.
    assert.ok(
      advisedRounds.every((rows) => rows <= 2),
      `advised rounds: ${advisedRounds}`,
    );
    assert.ok(advised.metrics.advisedRounds > 0);

    // The unadvised recording replayed on the advising cloud: rounds over 2 rows go as parts of at most 2.
    const replay = await replaySession(recording, {
      url: `ws://127.0.0.1:${advising.port}`,
      link: LINK_PROFILES.none,
      seed: 1,
      advice: { oneRow: { deviceMs: 1, commitMs: 0 } },
    });
    assert.equal(replay.error, undefined);
    assert.ok(replay.split.rounds > 0 && replay.split.into > replay.split.rounds, JSON.stringify(replay.split));
    assert.equal(replay.tokens, recording.tokens);
    const sent = recording.frames.length - replay.split.rounds + replay.split.into;
    assert.equal(replay.checked, sent, 'every part checked against its rows of the recorded result');
    const chunks = recording.frames.filter((f) => isPrefillFrame(f)).length;
    assert.equal(replay.decode.rounds, sent - chunks, 'every part of a split round is a round of its own');
    assert.ok(replay.maxAbsDiff <= 1e-2, `largest difference ${replay.maxAbsDiff}`);
  } finally {
    await advising.server.stop();
  }
});

test('--record refuses an existing file or a missing folder before anything is sent; the file is kept', async () => {
  const existing = join(dir, 'existing.json');
  writeFileSync(existing, 'keep me');
  for (const [record, message] of [
    [existing, /already exists/],
    [join(dir, 'no-such-folder', 'r.json'), /does not exist/],
  ] as const) {
    const wire: Uint8Array[] = [];
    await assert.rejects(
      runDevice(device({ record, recordUplink: (bytes) => wire.push(bytes) })),
      (e: HatError) => e.code === 'OUTPUT_EXISTS' && message.test(e.message) && e.hint !== undefined,
    );
    assert.equal(wire.length, 0, 'frames went up before the path was checked');
  }
  assert.equal(readFileSync(existing, 'utf8'), 'keep me');
});
