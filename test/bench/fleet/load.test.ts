import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinBlocks, type LoadRun, type SessionOutcome } from '../../../src/bench/fleet/load.ts';
import { fleetRunStats } from '../../../src/bench/fleet/fleet-metrics.ts';
import { parsePrometheus, summedIncreases } from '../../../src/bench/fleet/prom-text.ts';
import { blocksOf, BLOCK_ARRIVAL_STRIDE } from '../../../src/bench/fleet/run-fleet.ts';

/** A session that arrived at `at` and committed `commits` ([ms after arrival, tokens]). */
const session = (arrival: number, at: number, commits: Array<[number, number]>): SessionOutcome => ({
  mode: 'hat',
  promptTokens: 128,
  arrival,
  arrivedAt: at,
  takenAt: at,
  startedAt: at,
  endedAt: at + commits[commits.length - 1][0],
  device: 0,
  commits: commits.map(([after, count]) => ({ at: at + after, count })),
  tokens: commits.reduce((n, [, count]) => n + count, 0),
  lateMs: [],
  checked: 0,
  identical: 0,
  maxAbsDiff: 0,
  split: { rounds: 0, into: 0 },
  decode: { rounds: 0, deviceMs: 0, roundTripMs: 0 },
});

// Two 1-s blocks, run 10 s apart (other configurations' blocks in between); the first drains until 1,500 ms.
const blocks: LoadRun[] = [
  {
    startedAt: 1000,
    durationMs: 1000,
    endedAt: 2500,
    sessions: [
      session(0, 1100, [
        [100, 1],
        [1300, 4], // at 2,400: in the drain, after the block's window
      ]),
    ],
  },
  {
    startedAt: 12000,
    durationMs: 1000,
    endedAt: 12800,
    sessions: [
      session(1, 12500, [
        [100, 1],
        [200, 2],
      ]),
      session(0, 12200, [[50, 1]]),
    ],
  },
];

test('blocks joined into one run: back to back on one time line, windows kept, arrivals numbered per block', () => {
  const joined = joinBlocks(blocks, 100);
  assert.deepEqual(joined.windows, [
    { start: 1000, end: 2000 },
    { start: 2500, end: 3500 }, // the second block starts where the first one's drain ended
  ]);
  assert.equal(joined.durationMs, 2000);
  assert.equal(joined.endedAt, 3500, 'the second block lasted its whole window');
  assert.deepEqual(
    joined.sessions.map((s) => [s.arrival, s.arrivedAt, s.commits.map((c) => c.at)]),
    [
      [0, 1100, [1200, 2400]],
      [101, 3000, [3100, 3200]],
      [100, 2700, [2750]],
    ],
  );
  assert.equal(joinBlocks([blocks[0]], 100), blocks[0], 'one block is the run itself');
});

test('a joined run in figures: tokens inside either window per second of window, arrivals in them', () => {
  const stats = fleetRunStats(joinBlocks(blocks, BLOCK_ARRIVAL_STRIDE), {
    mode: 'hat',
    maxBatch: 16,
    load: { kind: 'poisson', rate: 2 },
    devices: 2,
    sloTtftMs: 1000,
    sloTbtMs: 200,
    before: [],
    after: [],
    cpuSeconds: null,
  });
  // In the windows: 1 token (block 1; its 4 at 2,400 fell in the drain) + 1 + 2 + 1 (block 2) over 2 s.
  assert.equal(stats.throughputTokensPerSecond, 2.5);
  assert.equal(stats.arrivedSessionsPerSecond, 1.5);
  assert.deepEqual(
    stats.sessionPoints!.map((p) => p.arrival),
    [0, BLOCK_ARRIVAL_STRIDE + 1, BLOCK_ARRIVAL_STRIDE],
  );
});

test("/metrics over blocks: each scrape pair's increases summed, as one scrape from zero", () => {
  const scrape = (compute: number, runs: number, extra = '') =>
    parsePrometheus(
      [
        `hat_cloud_compute_seconds_sum{class="small"} ${compute}`,
        `hat_cloud_compute_seconds_count{class="small"} ${runs}`,
        `hat_cloud_compute_seconds_bucket{class="small",le="+Inf"} ${runs}`,
        extra,
      ].join('\n'),
    );
  // Runs of other configurations happen on the server between the pairs (2 → 5): they must not count.
  const pairs = [
    { before: scrape(1, 10), after: scrape(2, 12) },
    { before: scrape(5, 20), after: scrape(5.5, 23, 'hat_cloud_errors_total{code="BAD_FRAME"} 1') },
  ];
  const summed = summedIncreases(pairs);
  const value = (name: string, labels: Record<string, string>) =>
    summed.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
  assert.equal(value('hat_cloud_compute_seconds_sum', { class: 'small' }), 1.5);
  assert.equal(value('hat_cloud_compute_seconds_count', { class: 'small' }), 5);
  assert.equal(value('hat_cloud_compute_seconds_bucket', { class: 'small', le: '+Inf' }), 5);
  assert.equal(value('hat_cloud_errors_total', { code: 'BAD_FRAME' }), 1, 'a sample new in a later scrape');
});

test('blocks apply to Poisson loads only: the closed loop is one block', () => {
  assert.equal(blocksOf({ kind: 'poisson', rate: 2 }, 4), 4);
  assert.equal(blocksOf({ kind: 'closed-loop' }, 4), 1);
  assert.equal(blocksOf({ kind: 'poisson', rate: 2 }), 1);
});
