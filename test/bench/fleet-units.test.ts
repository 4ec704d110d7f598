/**
 * The fleet benchmark's pure pieces: prompt lengths clamped to the model's context, and the rounds of a trained
 * model's recording transplanted into a random-weight shape's session (rows, past lengths, commits, device times).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clampLengths, passageInAdapterCorpus, promptsFromFile } from '../../src/bench/prompts.ts';
import type { HatError } from '../../src/errors.ts';
import type { SplitManifest } from '../../src/split/manifest.ts';
import {
  atHighestSustainedRate,
  capacities,
  sustained,
  tbtDecomposition,
  ttftByPrompt,
  ttftDecomposition,
} from '../../src/bench/fleet/fleet-report.ts';
import { ttftPath, TTFT_SEGMENTS, type TtftPath } from '../../src/bench/fleet/ttft-path.ts';
import { fleetRunStats, type FleetRunStats, type RunContext } from '../../src/bench/fleet/fleet-metrics.ts';
import { alternatingArms, fleetSpread, renderSpread, spreadOf } from '../../src/bench/fleet/fleet-spread.ts';
import { foreignRecording, runOrder } from '../../src/bench/fleet/run-fleet.ts';
import { inRecordingOrder, readRecordings, recordingFileNames } from '../../src/bench/fleet/record-sessions.ts';
import type { LoadRun, SessionOutcome } from '../../src/bench/fleet/load.ts';
import { parsePrometheus } from '../../src/bench/fleet/prom-text.ts';
import { oneRowCost, roundCosts, roundsOf, transplantRounds } from '../../src/bench/fleet/transplant.ts';
import { splitRound } from '../../src/bench/fleet/replay.ts';
import {
  frameHeader,
  recordingFromJson,
  recordingToJson,
  type SessionRecording,
} from '../../src/runtime/device/session-recorder.ts';
import { encodeFrame, FrameFlags } from '../../src/runtime/protocol/frame.ts';
import { encodeHidden } from '../../src/runtime/protocol/hidden-codec.ts';

test('prompt lengths are clamped to what the context leaves, with a note', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-clamp-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ max_position_embeddings: 256 }));
  const clamped = clampLengths(dir, [128, 384, 896], 64, 6);
  assert.deepEqual(clamped.lengths, [128, 185]);
  assert.match(
    clamped.note ?? '',
    /prompt lengths 384, 896 clamped to 185 tokens: the model's context \(config\.json\) is 256/,
  );
  assert.deepEqual(clampLengths(dir, [16, 32], 64, 6), { lengths: [16, 32], note: undefined });
  assert.throws(() => clampLengths(dir, [16], 250, 6), /leave no room for a prompt/);
  const bare = mkdtempSync(join(tmpdir(), 'hat-clamp-'));
  assert.deepEqual(clampLengths(bare, [4096], 64, 6).lengths, [4096]);
});

test("a note when the adapter's recorded corpus holds the benchmark's passage, wrapped any way; none otherwise", () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-leak-'));
  const passage = readFileSync(new URL('../../src/bench/held-out-passage.txt', import.meta.url), 'utf8');
  const other = 'In the beginning God created the heaven and the earth.\n'.repeat(200);
  // A verse per line, as the KJV corpus of fixtures/README.md: the passage's spaces become line breaks.
  const leaky = join(dir, 'leaky.txt');
  writeFileSync(leaky, other + passage.replace(/([.;:]) /g, '$1\n') + other);
  const clean = join(dir, 'clean.txt');
  writeFileSync(clean, other);
  const withCorpus = (corpus: unknown) => ({ adapter: { metrics: { data: { corpus } } } }) as unknown as SplitManifest;
  assert.match(passageInAdapterCorpus(withCorpus(leaky)) ?? '', /leaky\.txt, which holds the passage .*1 John/);
  assert.equal(passageInAdapterCorpus(withCorpus(clean)), undefined);
  assert.equal(passageInAdapterCorpus(withCorpus(join(dir, 'gone.txt'))), undefined, 'not on this machine');
  assert.equal(passageInAdapterCorpus(withCorpus(undefined)), undefined, 'self-generated text');
  assert.equal(passageInAdapterCorpus({} as SplitManifest), undefined, 'no adapter');
});

const HIDDEN = 4;

/** A recording made of given prompt chunks and rounds (rows, tokens committed, device ms, commit delay). */
function recording(
  chunks: number[],
  rounds: Array<{ rows: number; committed: number; deviceMs: number; commitMs: number }>,
  mode = 'hat',
): SessionRecording {
  const frames: SessionRecording['frames'] = [];
  const results: SessionRecording['results'] = [];
  const prompt = chunks.reduce((a, b) => a + b, 0);
  let past = 0;
  const add = (rows: number, flags: number, after: number, deviceMs: number) => {
    const values = Float32Array.from({ length: rows * HIDDEN }, (_, i) => frames.length * 100 + i);
    frames.push({
      bytes: encodeFrame(
        {
          type: 'forward',
          flags,
          dtype: 'fp16',
          sessionId: 7,
          seq: frames.length + 1,
          pastLength: past,
          nTokens: rows,
          hiddenSize: HIDDEN,
        },
        encodeHidden(values, rows, HIDDEN, 'fp16'),
      ),
      sentMs: 0,
      after,
      deviceMs,
    });
  };
  chunks.forEach((size, i) => {
    add(size, FrameFlags.prefill, -1, 1);
    past += size;
    results.push({
      arrivedMs: 0,
      rows: 1,
      hidden: new Float32Array(HIDDEN).fill(i),
      commits: i === chunks.length - 1 ? [{ afterMs: 0.5, count: 1 }] : [],
    });
  });
  past = prompt;
  for (const round of rounds) {
    add(round.rows, FrameFlags.allPositions, frames.length - 1, round.deviceMs);
    results.push({
      arrivedMs: 0,
      rows: round.rows,
      hidden: new Float32Array(round.rows * HIDDEN),
      commits: [{ afterMs: round.commitMs, count: round.committed }],
    });
    past += round.committed;
  }
  const tokens = 1 + rounds.reduce((n, r) => n + r.committed, 0);
  return {
    format: 'hat-recording/1',
    manifestHash: 'a'.repeat(64),
    hiddenSize: HIDDEN,
    wire: 'fp16',
    mode,
    promptTokens: prompt,
    tokens,
    link: 'none',
    recordedAt: '',
    frames,
    results,
  };
}

test("a trained model's rounds transplanted into a random-weight session: rows, pasts, commits, device times", () => {
  // The shape's own sessions: U-shape rounds cost 2 ms (+0.2 to commit), HAT rounds of 4 rows at η = 0 8 ms (+0.8).
  const rounds = (rows: number, deviceMs: number, commitMs: number) =>
    Array.from({ length: 3 }, () => ({ rows, committed: 1, deviceMs, commitMs }));
  const u = recording([10], rounds(1, 2, 0.2), 'u-shape');
  const own = recording([6, 4], rounds(4, 8, 0.8), 'hat-eta0');
  const costs = roundCosts([u], [own]);
  assert.deepEqual(costs, { one: { deviceMs: 2, commitMs: 0.2 }, many: { rows: 4, deviceMs: 8, commitMs: 0.8 } });

  // The trained model's session: 3 rounds of 4, 2 and 1 rows that committed 3, 2 and 1 tokens.
  const pattern = recording(
    [8],
    [
      { rows: 4, committed: 3, deviceMs: 1, commitMs: 0 },
      { rows: 2, committed: 2, deviceMs: 1, commitMs: 0 },
      { rows: 1, committed: 1, deviceMs: 1, commitMs: 0 },
    ],
  );
  assert.deepEqual(roundsOf(pattern), [
    { rows: 4, committed: 3 },
    { rows: 2, committed: 2 },
    { rows: 1, committed: 1 },
  ]);

  const built = transplantRounds(own, pattern, costs);
  assert.equal(built.mode, 'hat');
  assert.match(built.synthetic ?? '', /rounds .* from a recorded session of aaaaaaaaaaaa/);
  assert.equal(built.tokens, 1 + 3 + 2 + 1);
  // The prompt's two chunks are the shape's own, results (checked in a replay) and the first token included.
  assert.deepEqual(built.frames.slice(0, 2), own.frames.slice(0, 2));
  assert.deepEqual(built.results.slice(0, 2), own.results.slice(0, 2));
  const headers = built.frames.slice(2).map((f) => frameHeader(f));
  assert.deepEqual(
    headers.map((h) => [h.seq, h.pastLength, h.nTokens, h.flags, h.dtype, h.hiddenSize, h.sessionId]),
    [
      [3, 10, 4, FrameFlags.allPositions, 'fp16', HIDDEN, 7],
      [4, 13, 2, FrameFlags.allPositions, 'fp16', HIDDEN, 7],
      [5, 15, 1, FrameFlags.allPositions, 'fp16', HIDDEN, 7],
    ],
  );
  assert.deepEqual(
    built.frames.slice(2).map((f) => f.after),
    [1, 2, 3],
  );
  // 4 rows cost the η = 0 round, 1 row the U-shape round, 2 rows a third of the way between.
  assert.deepEqual(
    built.frames.slice(2).map((f) => f.deviceMs),
    [8, 4, 2],
  );
  assert.deepEqual(
    built.results.slice(2).map((r) => [r.rows, r.hidden.length, r.commits]),
    [
      [4, 0, [{ afterMs: 0.8, count: 3 }]],
      [2, 0, [{ afterMs: 0.4, count: 2 }]],
      [1, 0, [{ afterMs: 0.2, count: 1 }]],
    ],
  );
  // And it survives the recording file format.
  const back = recordingFromJson(recordingToJson(built), 'memory');
  assert.deepEqual(back.frames, built.frames);
  assert.deepEqual(
    back.results.map((r) => [...r.hidden]),
    built.results.map((r) => [...r.hidden]),
  );
});

test('recordings whose fields do not hang together are refused on reading, naming what is wrong', () => {
  const good = recording([6, 4], [{ rows: 3, committed: 2, deviceMs: 1, commitMs: 0 }]);
  const refused = (r: SessionRecording, why: RegExp) =>
    assert.throws(
      () => recordingFromJson(recordingToJson(r), 'r.json'),
      (e: HatError) =>
        e.code === 'BAD_OPTION' &&
        /^r\.json is not a hat-recording\/1 recording: /.test(e.message) &&
        why.test(e.message),
    );
  assert.equal(recordingFromJson(recordingToJson(good), 'r.json').frames.length, 3);
  // A frame waiting for a result that never comes hung the fleet benchmark's warm-up replay.
  refused(
    { ...good, frames: good.frames.map((f, i) => (i === 2 ? { ...f, after: 99 } : f)) },
    /frames\.2\.after is 99/,
  );
  refused({ ...good, frames: good.frames.map((f, i) => (i === 1 ? { ...f, after: 1 } : f)) }, /frames\.1\.after is 1/);
  // One result per frame (a replay reads results[i]): fewer was a TypeError after serve-cloud had started.
  refused({ ...good, results: good.results.slice(0, 2) }, /3 frames but 2 results/);
  refused({ ...good, frames: [], results: [] }, /holds no frame/);
});

test('bad --recordings and --prompts paths and lines are one-line errors, not INTERNAL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hat-bad-inputs-'));
  const file = join(dir, 'r.json');
  writeFileSync(file, '{}');
  assert.throws(
    () => readRecordings(file),
    (e: HatError) => e.code === 'BAD_OPTION' && /is a file, not a folder/.test(e.message),
  );
  assert.throws(
    () => promptsFromFile(dir, undefined, 256),
    (e: HatError) => e.code === 'BAD_OPTION' && /is a folder, not a file/.test(e.message),
  );
  for (const line of ['null', '[1, 2]', '3', '{"ids": [1, 2']) {
    const prompts = join(dir, 'p.jsonl');
    writeFileSync(prompts, `{"ids": [1, 2, 3]}\n${line}\n`);
    assert.throws(
      () => promptsFromFile(prompts, undefined, 256),
      (e: HatError) => e.code === 'BAD_OPTION' && /p\.jsonl:2 is not a JSON object/.test(e.message),
      line,
    );
  }
  // Recordings of sessions that never decoded (one token each) cannot time a 1-row round: a user's input, not a bug.
  assert.throws(
    () => oneRowCost([recording([8], [], 'u-shape')]),
    (e: HatError) => e.code === 'BAD_OPTION' && /no U-shape decode round/.test(e.message),
  );
});

test('hat against u-shape at the highest Poisson rate u-shape sustains (≥ 90 % within the SLO, none failed)', () => {
  const run = (mode: string, batching: 'on' | 'off', rate: number | 'closed', slo: number, ttft: number, tbt: number) =>
    ({
      mode,
      batching,
      load: rate === 'closed' ? { kind: 'closed' } : { kind: 'poisson', rate },
      sessions: { arrived: 10, completed: 10, failed: 0 },
      sloAttainment: slo,
      ttftMs: { mean: ttft, p50: ttft, p90: ttft, p99: ttft },
      tbtMs: { mean: tbt, p50: tbt, p90: tbt, p99: tbt },
    }) as unknown as FleetRunStats;
  const runs = [
    run('u-shape', 'on', 2, 1, 400, 100),
    run('u-shape', 'on', 4, 0.95, 500, 120),
    run('u-shape', 'on', 8, 0.4, 9000, 300), // overloaded: not sustained
    run('u-shape', 'on', 'closed', 1, 100, 10), // not a Poisson rate
    run('hat', 'on', 4, 1, 200, 30),
    run('hat', 'on', 2, 1, 100, 20),
    run('u-shape', 'off', 2, 0.5, 800, 100),
    run('hat', 'off', 2, 1, 100, 20),
  ];
  const lines = atHighestSustainedRate(runs);
  assert.equal(lines.length, 2);
  assert.match(
    lines[0],
    /^batching on, 4\/s .* hat TTFT 200\.0 ms vs u-shape 500\.0 ms = 0\.40×, TBT 30\.00 vs 120\.00 ms = 0\.25×/,
  );
  assert.equal(lines[1], 'batching off: u-shape sustained none of the Poisson rates run');
});

test('the TBT ratio decomposed: round times over tokens per round, and the tokens per round 0.5× needs', () => {
  const run = (mode: string, tokensPerRound: number, roundMs: number, count = 10) =>
    ({ mode, rounds: { count, tokensPerRound, roundMs, deviceMs: 1, roundTripMs: roundMs - 2 } }) as FleetRunStats;
  // hat: 2 tokens per 30 ms round, u-shape 1 per 20 ms: 1.5× as long / 2× the tokens = 0.75×; 0.5× needs 3 tokens.
  assert.equal(
    tbtDecomposition(run('hat', 2, 30), run('u-shape', 1, 20)),
    'TBT = round time / tokens per round: hat 2.00 tokens per 30.00 ms round (device 1.00 ms, send to result ' +
      "28.00 ms), u-shape 1.00 tokens per 20.00 ms round (device 1.00 ms, send to result 18.00 ms); hat's rounds " +
      'take 1.50× as long and commit 2.00× the tokens (1.50 / 2.00 = 0.75×); at these round times TBT 0.5× needs ' +
      '3.00 tokens per hat round',
  );
  assert.equal(tbtDecomposition(run('hat', 2, 30), run('u-shape', 1, 20, 0)), undefined, 'no u-shape rounds');
  assert.equal(tbtDecomposition(run('hat', 2, 30, 0), run('u-shape', 1, 20)), undefined, 'no hat rounds');
  assert.equal(tbtDecomposition(run('hat', 2, 30), run('u-shape', 1, 0)), undefined, 'u-shape rounds of no time');
  assert.equal(tbtDecomposition(run('hat', 0, 30), run('u-shape', 1, 20)), undefined, 'hat rounds of no tokens');
});

/** A replayed session's outcome as the load generator reports it; each test sets what it measures. */
const outcome = (over: Partial<SessionOutcome>): SessionOutcome => ({
  mode: 'hat',
  promptTokens: 0,
  arrival: 0,
  arrivedAt: 0,
  takenAt: 0,
  startedAt: 0,
  endedAt: 0,
  device: 0,
  commits: [],
  tokens: 0,
  lateMs: [],
  checked: 0,
  identical: 0,
  maxAbsDiff: 0,
  split: { rounds: 0, into: 0 },
  decode: { rounds: 0, deviceMs: 0, roundTripMs: 0 },
  ...over,
});

/** A batched hat run's context with no /metrics samples and no CPU reading unless a test gives them. */
const context = (over: Partial<RunContext> = {}): RunContext => ({
  mode: 'hat',
  maxBatch: 16,
  load: { kind: 'closed-loop' },
  devices: 2,
  sloTtftMs: 1000,
  sloTbtMs: 200,
  before: [],
  after: [],
  cpuSeconds: null,
  ...over,
});

test('runs are counterbalanced: over two loads each configuration of a mode goes first, after either process', () => {
  const label = (r: { m: number; c: number }) => `${['hat', 'u'][r.m]}-${['on', 'off'][r.c]}`;
  const sequence = [0, 1].flatMap((load) => runOrder(2, load).map(label));
  assert.deepEqual(sequence, ['hat-on', 'hat-off', 'u-off', 'u-on', 'u-on', 'u-off', 'hat-off', 'hat-on']);
  for (const mode of ['hat', 'u']) {
    const firsts = [0, 1].map((load) => label(runOrder(2, load).find((r) => label(r).startsWith(mode))!));
    assert.deepEqual(new Set(firsts).size, 2, `${mode} ran the same configuration first at both loads`);
  }
  // The run before each configuration's (across the two loads, the previous load's last run included).
  const before = new Map<string, string[]>();
  sequence.forEach((run, i) => i > 0 && before.set(run, [...(before.get(run) ?? []), sequence[i - 1]]));
  const sameProcess = (a: string, b: string) => a.endsWith('-on') === b.endsWith('-on');
  assert.deepEqual(
    before.get('hat-off')!.map((previous) => sameProcess(previous, 'hat-off')),
    [false, true],
    'hat-off follows the other process once and its own once',
  );
  // One mode: on and off alternate which goes first.
  assert.deepEqual(
    [0, 1, 2].map((load) => runOrder(1, load).map(label).join()),
    ['hat-on,hat-off', 'hat-off,hat-on', 'hat-on,hat-off'],
  );
});

test('recordings read back in the order their run replayed them: prompt lengths and indices as numbers', () => {
  const recorded = [64, 64, 64, 128].map((promptTokens) => ({ mode: 'hat', promptTokens }));
  const names = recordingFileNames([...recorded, ...Array(11).fill({ mode: 'hat', promptTokens: 896 })] as never);
  const files = names.map((name) => name.replace('recordings/', ''));
  const byString = [...files].sort(); // the order readRecordings used: hat-128-0 first, hat-896-10 before hat-896-2
  assert.notDeepEqual(byString, files);
  assert.deepEqual(inRecordingOrder(byString), files);
});

test('a rate is sustained from the exact share within the SLO: 188 of 209 (89.95 %) is not 90 %', () => {
  const session = (arrival: number, ttft: number) =>
    outcome({ arrival, promptTokens: 128, arrivedAt: 0, takenAt: 0, startedAt: 0, commits: [{ at: ttft, count: 1 }] });
  const run = (within: number): LoadRun => ({
    startedAt: 0,
    durationMs: 60_000,
    endedAt: 70_000,
    sessions: Array.from({ length: 209 }, (_, i) => session(i, i < within ? 100 : 5000)),
  });
  assert.equal(sustained(fleetRunStats(run(188), context())), false);
  assert.equal(sustained(fleetRunStats(run(189), context())), true);
});

test('TTFT by prompt length: completed sessions only, each length its own mean, hat against u-shape', () => {
  const session = (promptTokens: number, arrivedAt: number, firstCommit: number, error?: string) =>
    outcome({
      promptTokens,
      arrivedAt,
      takenAt: arrivedAt + 10,
      startedAt: arrivedAt + 20,
      commits: [{ at: firstCommit, count: 1 }],
      error,
    });
  // TTFT = (takenAt − arrivedAt) + (first commit − startedAt): 10 + 100, 10 + 300; 10 + 40; the failed one left out.
  const run: LoadRun = {
    startedAt: 0,
    durationMs: 1000,
    endedAt: 2000,
    sessions: [session(896, 0, 120), session(896, 100, 420), session(128, 200, 260), session(128, 300, 900, 'lost')],
  };
  const hat = fleetRunStats(run, context());
  assert.deepEqual(hat.ttftMsByPrompt, { 128: { sessions: 1, mean: 50 }, 896: { sessions: 2, mean: 210 } });
  const uShape = { ttftMsByPrompt: { 128: { sessions: 2, mean: 40 }, 896: { sessions: 1, mean: 420 } } };
  assert.equal(
    ttftByPrompt(hat, uShape as unknown as FleetRunStats),
    'TTFT by prompt length, hat vs u-shape: 128 tokens 50.0 vs 40.0 ms = 1.25× (1 / 2 sessions); ' +
      '896 tokens 210.0 vs 420.0 ms = 0.50× (2 / 1 sessions)',
  );
  assert.equal(ttftByPrompt(hat, {} as FleetRunStats), undefined, 'a run without the field (older results.json)');
});

test('session points by arrival, and the paired interval line at the highest rate u-shape sustains', () => {
  // Arrival 0: TTFT 10 + 90, gaps 20, 20 (two tokens at 160); arrival 1 failed; arrival 2: TTFT 10 + 40, no gap.
  const session = (arrival: number, commits: Array<{ at: number; count: number }>, error?: string) =>
    outcome({ arrival, promptTokens: 128, arrivedAt: 0, takenAt: 10, startedAt: 20, commits, error });
  const run: LoadRun = {
    startedAt: 0,
    durationMs: 1000,
    endedAt: 2000,
    sessions: [
      session(2, [{ at: 60, count: 1 }]),
      session(0, [
        { at: 110, count: 1 },
        { at: 150, count: 2 },
      ]),
      session(1, [{ at: 70, count: 1 }], 'lost'),
    ],
  };
  const stats = fleetRunStats(run, context());
  assert.deepEqual(stats.sessionPoints, [
    { arrival: 2, promptTokens: 128, ttftMs: 50, gapSumMs: 0, gaps: 0 },
    { arrival: 0, promptTokens: 128, ttftMs: 100, gapSumMs: 40, gaps: 2 },
  ]);
  const sustainedRun = (mode: string, sessionPoints?: FleetRunStats['sessionPoints']) =>
    ({
      ...stats,
      mode,
      load: { kind: 'poisson', rate: 2 },
      sessions: { arrived: 2, completed: 2, failed: 0 },
      sloAttainment: 1,
      sessionPoints,
    }) as FleetRunStats;
  const doubled = stats.sessionPoints!.map((p) => ({ ...p, ttftMs: 2 * p.ttftMs, gapSumMs: 4 * p.gapSumMs }));
  const lines = atHighestSustainedRate([sustainedRun('hat', stats.sessionPoints), sustainedRun('u-shape', doubled)]);
  assert.equal(
    lines[1],
    '  95 % intervals over the arrivals (a paired bootstrap: the 2 arrivals both completed, each the same prompt at ' +
      'the same time in both, resampled 2,000 times; sampling within this run only; runs vary more than this): ' +
      'TTFT 0.50–0.50×, TBT 0.25–0.25×',
  );
  const older = atHighestSustainedRate([sustainedRun('hat'), sustainedRun('u-shape', doubled)]);
  assert.ok(!older.some((line) => line.includes('intervals')), 'an older results.json has no session points');
});

test('the TTFT critical path: device, uplink, cloud queue and compute, downlink; it adds up to the TTFT', () => {
  const sum = (p: TtftPath) => TTFT_SEGMENTS.reduce((n, k) => n + p[k], 0);
  // u-shape: one request. Device 0→40, uplink 40→60, queue 60→70, compute 70→100, downlink and output 100→110.
  const one = ttftPath([{ sentAt: 40, deliveredAt: 60, receivedAt: 100, computeMs: 30 }], 0, 110)!;
  assert.deepEqual(one, { deviceMs: 40, uplinkMs: 20, cloudQueueMs: 10, cloudComputeMs: 30, afterMs: 10 });
  // A cloud-bound prompt: chunk 2 reached the cloud (30) while chunk 1 still ran (until 50), so the path goes
  // through chunk 1's run: queue 50→55 behind another session, compute 55→80, then chunk 1's own wait from 15.
  const cloudBound = ttftPath(
    [
      { sentAt: 10, deliveredAt: 15, receivedAt: 50, computeMs: 25 },
      { sentAt: 20, deliveredAt: 30, receivedAt: 80, computeMs: 25 },
    ],
    0,
    90,
  )!;
  assert.deepEqual(cloudBound, { deviceMs: 10, uplinkMs: 5, cloudQueueMs: 15, cloudComputeMs: 50, afterMs: 10 });
  assert.equal(sum(cloudBound), 90);
  // A device-bound prompt: chunk 2 reached the cloud (70) after chunk 1's result (50); the path leaves the cloud at
  // chunk 2's arrival and the device at its send (60).
  const deviceBound = ttftPath(
    [
      { sentAt: 10, deliveredAt: 15, receivedAt: 50, computeMs: 25 },
      { sentAt: 60, deliveredAt: 70, receivedAt: 90, computeMs: 15 },
    ],
    0,
    95,
  )!;
  assert.deepEqual(deviceBound, { deviceMs: 60, uplinkMs: 10, cloudQueueMs: 5, cloudComputeMs: 15, afterMs: 5 });
  // Chunks joined in one run (both answered at its end, each told the whole run's compute): counted once; the time
  // since the first of them arrived is queue.
  const joined = ttftPath(
    [
      { sentAt: 10, deliveredAt: 20, receivedAt: 60, computeMs: 30 },
      { sentAt: 15, deliveredAt: 25, receivedAt: 60.5, computeMs: 30 },
    ],
    0,
    70,
  )!;
  assert.deepEqual(joined, { deviceMs: 10, uplinkMs: 10, cloudQueueMs: 10.5, cloudComputeMs: 30, afterMs: 9.5 });
  // Back-to-back runs: run 2 began (at 50) as run 1's result left, but that result was stamped 0.25 ms late. Their
  // different compute times tell two runs from one merged run, so both computes count.
  const backToBack = ttftPath(
    [
      { sentAt: 10, deliveredAt: 15, receivedAt: 50.25, computeMs: 25 },
      { sentAt: 20, deliveredAt: 30, receivedAt: 70, computeMs: 20 },
    ],
    0,
    75,
  )!;
  assert.equal(backToBack.cloudComputeMs, 45);
  assert.equal(sum(backToBack), 75);
  // Three chunks: 1 alone (cloud-bound from 2's view), then 2 and 3 joined in one run.
  const chain = ttftPath(
    [
      { sentAt: 10, deliveredAt: 12, receivedAt: 40, computeMs: 20 },
      { sentAt: 20, deliveredAt: 25, receivedAt: 90, computeMs: 40 },
      { sentAt: 30, deliveredAt: 35, receivedAt: 90.5, computeMs: 40 },
    ],
    0,
    100,
  )!;
  assert.deepEqual(chain, { deviceMs: 10, uplinkMs: 2, cloudQueueMs: 18.5, cloudComputeMs: 60, afterMs: 9.5 });
  assert.equal(ttftPath([], 0, 10), undefined);
});

test('the TTFT path in a run: means with the device wait, by prompt length, and how far hat is from 0.6×', () => {
  const path = (scale: number): TtftPath => ({
    deviceMs: 10 * scale,
    uplinkMs: 20 * scale,
    cloudQueueMs: 30 * scale,
    cloudComputeMs: 40 * scale,
    afterMs: 5 * scale,
  });
  const session = (promptTokens: number, scale: number, error?: string) =>
    outcome({
      promptTokens,
      arrivedAt: 0,
      takenAt: 4,
      startedAt: 10,
      commits: [{ at: 10 + 105 * scale, count: 1 }],
      ttftPath: error ? undefined : path(scale),
      error,
    });
  const run = (sessions: SessionOutcome[]): LoadRun => ({ startedAt: 0, durationMs: 1000, endedAt: 2000, sessions });
  const hat = fleetRunStats(run([session(128, 1), session(896, 3), session(896, 5, 'lost')]), context());
  assert.deepEqual(hat.ttftPath!.all, {
    sessions: 2,
    deviceWaitMs: 4,
    deviceMs: 20,
    uplinkMs: 40,
    cloudQueueMs: 60,
    cloudComputeMs: 80,
    afterMs: 10,
  });
  assert.equal(hat.ttftPath!.byPrompt[896].cloudComputeMs, 120);
  assert.equal(hat.ttftMs.mean, 4 + 210, 'the segments and the device wait add up to the mean TTFT');
  const uShape = fleetRunStats(run([session(128, 2), session(896, 4)]), context({ mode: 'u-shape' }));
  const lines = ttftDecomposition(hat, uShape);
  assert.equal(lines.length, 3);
  assert.equal(
    lines[0],
    "TTFT along each session's critical path, ms (means): hat 214.0 = device wait 4.0 + device 20.0 + uplink 40.0 " +
      '+ cloud queue 60.0 + cloud compute 80.0 + downlink and output 10.0; u-shape 319.0 = device wait 4.0 + device ' +
      '30.0 + uplink 60.0 + cloud queue 90.0 + cloud compute 120.0 + downlink and output 15.0; TTFT 0.6× needs ' +
      "hat ≤ 191.4 ms, 22.6 ms less; with u-shape's time in the cloud and after it, and none before it, hat would be " +
      'at 0.71×',
  );
  assert.match(lines[2], /^ {2}896 tokens: hat 319\.0 = .*; u-shape 424\.0 = /);
  const slowUShape = fleetRunStats(run([session(128, 4), session(896, 6)]), context({ mode: 'u-shape' }));
  assert.match(ttftDecomposition(hat, slowUShape)[0], /; within TTFT 0\.6× \(≤ 317\.4 ms\); /);
  assert.deepEqual(ttftDecomposition(hat, {} as FleetRunStats), [], 'a run without the field (older results.json)');
  const pathless = { ...session(128, 1), ttftPath: undefined };
  const partly = fleetRunStats(run([session(128, 1), session(896, 3), pathless]), context());
  assert.match(ttftDecomposition(partly, uShape)[0], /^TTFT .*: hat [^;]* \(over 2 of 3 sessions\); u-shape [^(]*; /);
});

test("--recordings: another split's sessions are refused, a random-weight run's acceptance sessions are not", () => {
  const of = (mode: string, manifestHash: string) => ({ mode, manifestHash }) as SessionRecording;
  // What `bench:fleet:qwen` leaves in its --out: its own sessions and the trained default model's hat sessions.
  const saved = [of('acceptance-hat', 'trained'), of('hat-eta0', 'qwen'), of('u-shape', 'qwen')];
  assert.equal(foreignRecording(saved, 'qwen'), undefined);
  assert.equal(foreignRecording([...saved, of('u-shape', 'other')], 'qwen')?.manifestHash, 'other');
  assert.equal(foreignRecording([of('hat', 'trained')], 'qwen')?.mode, 'hat');
});

test('cost per token counts the whole run: commits after the window and of failed sessions, compute by class', () => {
  const session = (commits: Array<[number, number]>, error?: string) =>
    outcome({
      commits: commits.map(([at, count]) => ({ at, count })),
      decode: { rounds: commits.length - 1, deviceMs: 2 * (commits.length - 1), roundTripMs: 5 * (commits.length - 1) },
      error,
    });
  // A 1-s window: 3 + 2 + 1 tokens inside it, 5 + 1 after it (the drain); 2 of them from a session that failed.
  const run: LoadRun = {
    startedAt: 0,
    durationMs: 1000,
    endedAt: 4000,
    sessions: [
      session([
        [100, 3],
        [500, 2],
        [2500, 5],
      ]),
      session(
        [
          [300, 1],
          [2000, 1],
        ],
        'stopped',
      ),
    ],
  };
  const after = parsePrometheus(
    [
      'hat_cloud_compute_seconds_bucket{class="chunk",le="+Inf"} 3',
      'hat_cloud_compute_seconds_bucket{class="small",le="+Inf"} 9',
      'hat_cloud_compute_seconds_sum{class="chunk"} 0.5',
      'hat_cloud_compute_seconds_sum{class="small"} 0.7',
      'hat_cloud_compute_seconds_count{class="chunk"} 3',
      'hat_cloud_compute_seconds_count{class="small"} 9',
      'hat_cloud_real_rows_total{class="chunk"} 96',
      'hat_cloud_real_rows_total{class="small"} 30',
      'hat_cloud_padded_rows_total{class="chunk"} 100',
      'hat_cloud_padded_rows_total{class="small"} 35',
    ].join('\n'),
  );
  const stats = fleetRunStats(run, context({ after, cpuSeconds: 1.8 }));
  assert.equal(stats.throughputTokensPerSecond, 6);
  // Rounds after the first token, of the completed session only (the failed one's 1,700-ms round is left out):
  // 2 + 5 tokens over 400 + 2,000 ms.
  assert.deepEqual(stats.rounds, { count: 2, tokensPerRound: 3.5, roundMs: 1200, deviceMs: 2, roundTripMs: 5 });
  assert.equal(stats.tbtMs.mean.toFixed(3), (stats.rounds.roundMs / stats.rounds.tokensPerRound).toFixed(3));
  assert.deepEqual(stats.cost, {
    tokens: 12,
    computeMsPerToken: 100,
    chunkMsPerToken: 41.6667,
    smallMsPerToken: 58.3333,
    cpuMsPerToken: 150,
    rowsPerToken: { chunk: 8, small: 2.5 },
    msPerPaddedRow: { chunk: 5, small: 20 },
  });
});

test('capacity: batched over --max-batch 1 cost per token, and the ceiling if verifications cost nothing', () => {
  const run = (batching: 'on' | 'off', chunk: number, small: number, cpu: number | null) =>
    ({
      mode: 'hat',
      batching,
      load: { kind: 'closed-loop' },
      cost: {
        tokens: 100,
        computeMsPerToken: chunk + small,
        chunkMsPerToken: chunk,
        smallMsPerToken: small,
        cpuMsPerToken: cpu,
        // 3 verification rows per token; prompt-chunk rows cost 0.1 ms batched, 0.125 alone; verification rows more.
        rowsPerToken: { chunk: 10, small: 3 },
        msPerPaddedRow: { chunk: batching === 'on' ? 0.1 : 0.125, small: small / 3 },
      },
    }) as unknown as FleetRunStats;
  const lines = capacities([run('on', 1, 1, 2.5), run('off', 1, 3, 5)]);
  assert.deepEqual(lines, [
    'hat at closed loop: 2.000 vs 4.000 compute ms per token = 2.00× (server CPU 2.500 vs 5.000 ms = 2.00×); ' +
      'prompt chunks 1.000 vs 1.000, verifications 1.000 vs 3.000 ms per token; ' +
      'at most 4.00× if verifications cost nothing and prompt chunks what they cost one by one',
    // Floor: chunks 1 + 3 rows × 0.1 ms = 1.3 ms per token; 4 / 1.3 = 3.08×.
    'hat at closed loop, by rows: verifications carry 3.00 rows per committed token; at the cheapest cost per row ' +
      'of these two runs (0.100 ms, prompt-chunk rows, batching on) they cost at least 0.300 ms per token, so ' +
      'batching gives at most 3.08× at this acceptance',
  ]);
  assert.deepEqual(capacities([run('on', 1, 1, null)]), [], 'no --max-batch 1 run to compare with');
  assert.match(capacities([run('on', 1, 1, null), run('off', 1, 3, 5)])[0], /server CPU – vs 5\.000 ms = –\)/);
});

test('a recorded round split at the advised rows: parts start at committed tokens, commit the recorded total', () => {
  // Every round shape and advice: parts are consecutive, start at or before the last accepted draft, commit ≥ 1 each
  // and the recorded total in all, and carry at most the advised rows.
  for (let rows = 1; rows <= 8; rows++) {
    for (let committed = 1; committed <= rows; committed++) {
      for (let advice = 1; advice <= 9; advice++) {
        let total = 0;
        for (let from = 0, last = false; !last;) {
          assert.ok(from <= committed - 1, `part from ${from} (${rows}/${committed}/${advice})`);
          const part = splitRound(rows, committed, from, advice);
          assert.ok(part.count >= 1 && part.to - from <= advice && part.to <= rows);
          total += part.count;
          last = part.last;
          from += part.count;
        }
        assert.equal(total, committed, `${rows} rows, ${committed} committed, advice ${advice}`);
      }
    }
  }
  // 7 rows (pending token + 6 drafts), 4 committed: drafts 1–3 accepted, draft 4 rejected. Advice: 2 rows.
  const parts: Array<{ from: number; to: number; count: number }> = [];
  for (let from = 0, last = false; !last;) {
    const part = splitRound(7, 4, from, 2);
    parts.push({ from, to: part.to, count: part.count });
    last = part.last;
    from += part.count;
  }
  assert.deepEqual(parts, [
    { from: 0, to: 2, count: 2 },
    { from: 2, to: 4, count: 2 },
  ]);
  // All accepted (7 committed from 7 rows), advice 3: 3 + 3 + 1.
  assert.deepEqual(
    [0, 3, 6].map((from) => splitRound(7, 7, from, 3)),
    [
      { to: 3, count: 3, last: false },
      { to: 6, count: 3, last: false },
      { to: 7, count: 1, last: true },
    ],
  );
  // Nothing accepted: one part of the advised rows, committing the target's token.
  assert.deepEqual(splitRound(5, 1, 0, 2), { to: 2, count: 1, last: true });
  // Advice 1 row: U-shape, one token per part.
  assert.deepEqual(splitRound(4, 3, 1, 1), { to: 2, count: 1, last: false });
});

test('the spread over repeated fleet runs: medians and ranges of the report ratios, per mode, load and setting', () => {
  const run = (mode: string, batching: 'on' | 'off', rate: number | 'closed', tokS: number, msPerToken: number) =>
    ({
      mode,
      batching,
      load: rate === 'closed' ? { kind: 'closed-loop' } : { kind: 'poisson', rate },
      sessions: { arrived: 10, completed: 10, failed: 0 },
      sloAttainment: mode === 'u-shape' && tokS > 100 ? 0.5 : 1,
      throughputTokensPerSecond: tokS,
      ttftMs: { mean: msPerToken * 100, p50: 0, p90: 0, p99: 0 },
      tbtMs: { mean: msPerToken * 10, p50: 0, p90: 0, p99: 0 },
      cost: { computeMsPerToken: msPerToken },
    }) as unknown as FleetRunStats;
  // Three repeats; batched hat gains 1.2×, 1.5×, 1.3× in the window; u-shape's 2/s run is overloaded in the last.
  const repeat = (gain: number, uShapeTokS: number) => [
    run('hat', 'on', 'closed', 100 * gain, 2),
    run('hat', 'off', 'closed', 100, 3),
    run('hat', 'on', 2, 50, 2),
    run('hat', 'off', 2, 50, 2),
    run('u-shape', 'on', 2, uShapeTokS, 4),
    run('u-shape', 'off', 2, 50, 5),
  ];
  const third = repeat(1.3, 150);
  third[5] = { ...third[5], sessions: { arrived: 10, completed: 7, failed: 3 } };
  const spread = fleetSpread([repeat(1.2, 50), repeat(1.5, 50), third]);
  assert.equal(spread.repeats, 3);
  assert.deepEqual(spread.sessions, { arrived: 180, failed: 3 });
  assert.deepEqual(spread.failedRuns, [
    { repeat: 3, mode: 'u-shape', batching: 'off', load: '2/s', failed: 3, of: 10 },
  ]);
  const hatClosed = spread.batching.find((b) => b.mode === 'hat' && b.load === 'closed loop')!;
  assert.deepEqual(
    hatClosed.window.values.map((v) => +v.toFixed(6)),
    [1.2, 1.5, 1.3],
  );
  assert.equal(+hatClosed.window.median.toFixed(6), 1.3);
  assert.equal(hatClosed.window.min, 1.2);
  assert.equal(hatClosed.window.max, 1.5);
  assert.equal(hatClosed.capacity.median, 1.5, 'capacity: 3 ms per token one by one over 2 batched');
  const versus = spread.versusUShape.find((v) => v.batching === 'on' && v.load === '2/s')!;
  assert.equal(versus.ttft.median, 0.5, 'hat 200 ms over u-shape 400 ms');
  assert.equal(versus.sustained, 2, 'u-shape missed the SLO in the third repeat');
  assert.ok(!spread.versusUShape.some((v) => v.load === 'closed loop'), 'only Poisson rates compare TTFT');
  assert.equal(spreadOf([3, 1, 2, 10]).median, 2.5);
  const lines = renderSpread(spread);
  assert.equal(lines[0], '3 repeats, 180 sessions, 3 failed');
  assert.equal(
    lines[1],
    '- FAILED sessions in run 3: u-shape, batching off, 2/s: 3 of 10 (its ratios below still count)',
  );
  const off = spread.versusUShape.find((v) => v.batching === 'off' && v.load === '2/s')!;
  assert.equal(off.ttft.median, 0.4, 'batching off: hat 200 ms over u-shape 500 ms');
  assert.equal(off.sustained, 2, 'a run with failed sessions is not sustained');
  assert.ok(
    lines.includes(
      '- hat at closed loop: window median 1.30× (1.20×–1.50×; 1.20×, 1.50×, 1.30×); ' +
        'capacity median 1.50× (1.50×–1.50×; 1.50×, 1.50×, 1.50×)',
    ),
    lines.join('\n'),
  );
  // Each configuration's own figures, for an A/B of two settings (--versus): batched hat at closed loop.
  const figures = spread.figures.find((f) => f.mode === 'hat' && f.batching === 'on' && f.load === 'closed loop')!;
  assert.deepEqual(
    figures.tokensPerSecond.values.map((v) => +v.toFixed(6)),
    [120, 150, 130],
  );
  assert.equal(figures.ttftMs.median, 200);
  assert.equal(figures.computeMsPerToken.median, 2);
  assert.equal(spread.figures.length, 6, 'every run of the first repeat that every repeat has');
  assert.ok(
    lines.includes(
      '- hat, batching on, closed loop: TTFT ms median 200.0 (200.0–200.0; 200.0, 200.0, 200.0); ' +
        'TBT ms median 20.00 (20.00–20.00; 20.00, 20.00, 20.00); ' +
        'tok/s median 130.0 (120.0–150.0; 120.0, 150.0, 130.0); ' +
        'compute ms per token median 2.000 (2.000–2.000; 2.000, 2.000, 2.000)',
    ),
    lines.join('\n'),
  );
  // A ratio that a repeat lacks (its run missing) is left out rather than taken over fewer repeats.
  const partial = fleetSpread([repeat(1.2, 50), repeat(1.5, 50).slice(2)]);
  assert.ok(!partial.batching.some((b) => b.mode === 'hat' && b.load === 'closed loop'));
  assert.ok(!partial.figures.some((f) => f.mode === 'hat' && f.load === 'closed loop'));
});

test('an A/B alternates its arms a, b, b, a, … so that a drift of the machine weighs on both alike', () => {
  assert.deepEqual(alternatingArms(1), ['a', 'b']);
  assert.deepEqual(alternatingArms(4), ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']);
  assert.deepEqual(alternatingArms(3), ['a', 'b', 'b', 'a', 'a', 'b']);
  assert.equal(
    alternatingArms(4).reduce((n, a, i) => n + (a === 'a' ? i : -i), 0),
    0,
    'an even count per arm cancels a linear drift exactly',
  );
});

test('the spread at the limit: hat over u-shape at the highest rate u-shape sustained in each run', () => {
  const run = (mode: string, batching: 'on' | 'off', rate: number, ttftMs: number, slo = 1) =>
    ({
      mode,
      batching,
      load: { kind: 'poisson', rate },
      sessions: { arrived: 10, completed: 10, failed: 0 },
      sloAttainment: slo,
      throughputTokensPerSecond: 50,
      ttftMs: { mean: ttftMs, p50: 0, p90: 0, p99: 0 },
      tbtMs: { mean: ttftMs / 10, p50: 0, p90: 0, p99: 0 },
      cost: { computeMsPerToken: 1 },
    }) as unknown as FleetRunStats;
  // u-shape (batching on) sustains 3/s in the first run, only 2/s in the second (80 % within the SLO at 3/s), none in
  // the third; hat is 0.5× u-shape at 2/s and 1.0× at 3/s in every run.
  const repeat = (uShapeSloAt2: number, uShapeSloAt3: number) => [
    run('hat', 'on', 2, 100),
    run('u-shape', 'on', 2, 200, uShapeSloAt2),
    run('hat', 'on', 3, 300),
    run('u-shape', 'on', 3, 300, uShapeSloAt3),
  ];
  const spread = fleetSpread([repeat(1, 0.95), repeat(1, 0.8), repeat(0.5, 0.5)]);
  assert.deepEqual(
    spread.atLimit.map((a) => ({ batching: a.batching, loads: a.loads, runs: a.loads.length, ttft: a.ttft.values })),
    [{ batching: 'on', loads: ['3/s', '2/s'], runs: 2, ttft: [1, 0.5] }],
  );
  assert.equal(spread.atLimit[0].tbt.median, 0.75);
  assert.ok(
    renderSpread(spread).includes(
      '- batching on, 2 of 3 runs (at 3/s, 2/s): TTFT median 0.75× (0.50×–1.00×; 1.00×, 0.50×); ' +
        'TBT median 0.75× (0.50×–1.00×; 1.00×, 0.50×)',
    ),
    renderSpread(spread).join('\n'),
  );
});
