/**
 * serve-cloud's /metrics after real device sessions: scraped over HTTP, parsed as Prometheus text, and held to what
 * the devices sent and the worker pool counted — requests by kind, runs, batch sizes, real and padded rows, queue
 * waits, sessions, KV bytes (positions × the manifest's bytes per position) and errors by code.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { StartedCloud } from '../../../src/runtime/cloud/serve.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { runDevice } from '../../../src/runtime/device/run-device.ts';
import { manifestHash, readManifest } from '../../../src/runtime/split-dir.ts';
import { DEFAULT_SMALL_ROWS } from '../../../src/runtime/cloud/scheduler.ts';
import { CloudMetrics } from '../../../src/runtime/cloud/cloud-metrics.ts';
import { histogram, parsePrometheus, sampleValue, type Sample } from '../../../src/bench/fleet/prom-text.ts';
import { addIdentityAdapter, makeSmallSplit, serveSplit, SMALL_LLAMA } from '../../helpers/runtime-fixtures.ts';
import { waitFor } from '../../helpers/wait-for.ts';

let cloud: StartedCloud;
let split: string;

before(async () => {
  ({ split } = await makeSmallSplit());
  addIdentityAdapter(split);
  cloud = await serveSplit(split, { maxSessions: 8, maxTokensPerFrame: 512, maxContext: 512 });
});
after(() => cloud.server.stop());

async function scrape(): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${cloud.port}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await response.text());
}

test('/metrics counts what real device sessions sent and what the workers ran', async () => {
  const prompts = [
    [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17],
    [3, 4, 5, 6, 7],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 3, 4, 5, 6],
  ];
  const results = await Promise.all(
    prompts.map((ids, i) =>
      runDevice({
        splitDir: split,
        cloud: `ws://127.0.0.1:${cloud.port}`,
        prompt: { ids },
        maxNewTokens: 10,
        temperature: 0,
        topP: 1,
        seed: 0,
        draftThreshold: 0,
        maxDraft: 3,
        speculative: i !== 1,
        parallelDrafting: false,
        parallelBranches: 1,
        // The third prompt in one chunk of 14 rows, over DEFAULT_SMALL_ROWS: the 'chunk' class. (Split 12 + 2, the
        // 2-row chunk would join the 12-row one's run whenever it was queued in time: a flaky count.)
        chunk: i === 2 ? 14 : 4,
        wire: 'fp32',
        fallbackLocal: false,
        threads: 1,
      }),
    ),
  );
  const manifest = readManifest(split);
  await assert.rejects(
    CloudClient.connect({
      url: `ws://127.0.0.1:${cloud.port}`,
      manifestHash: 'f'.repeat(64),
      hiddenSize: manifest.hidden.size,
      wire: 'fp32',
    }),
    /MANIFEST_MISMATCH/,
  );

  // One session left open with 5 cached positions:
  // KV bytes = 5 × (middle layers × key+value × kv heads × head size × 4).
  const held = await CloudClient.connect({
    url: `ws://127.0.0.1:${cloud.port}`,
    manifestHash: manifestHash(manifest),
    hiddenSize: manifest.hidden.size,
    wire: 'fp32',
  });
  const five = new Float32Array(5 * manifest.hidden.size).fill(0.5);
  await held.forward(five, 5, 0, { allPositions: false, prefill: true });
  const headDim = SMALL_LLAMA.hiddenSize / SMALL_LLAMA.heads;
  const bytesPerPosition = manifest.kv.middle.length * 2 * SMALL_LLAMA.kvHeads * headDim * 4;
  await waitFor(async () => sampleValue(await scrape(), 'hat_cloud_sessions') === 1, { what: 'one open session' });
  const open = await scrape();
  assert.equal(sampleValue(open, 'hat_cloud_kv_bytes_per_position'), bytesPerPosition);
  assert.equal(sampleValue(open, 'hat_cloud_kv_positions'), 5);
  assert.equal(sampleValue(open, 'hat_cloud_kv_bytes'), 5 * bytesPerPosition);
  held.close();
  await waitFor(async () => sampleValue(await scrape(), 'hat_cloud_sessions') === 0, { what: 'sessions closed' });

  const samples = await scrape();
  const chunks = results.reduce((n, r) => n + r.metrics.chunkSizes.length, 0) + 1; // + the held session's frame
  const rounds = results.reduce((n, r) => n + r.metrics.rounds, 0);
  assert.equal(sampleValue(samples, 'hat_cloud_requests_total', { kind: 'prefill_chunk' }), chunks);
  assert.equal(sampleValue(samples, 'hat_cloud_requests_total', { kind: 'verification' }), rounds);
  assert.ok(rounds > 0 && chunks > 4);

  const { stats } = cloud.pool;
  const batch = histogram(samples, 'hat_cloud_batch_sessions');
  assert.equal(batch.count, stats.runs);
  assert.equal(batch.sum, stats.requests);
  assert.equal(stats.requests, chunks + rounds);
  assert.equal(
    batch.buckets.reduce((n, b) => n + b.count, 0),
    stats.runs,
  );
  assert.equal(sampleValue(samples, 'hat_cloud_runs_total'), stats.runs);
  assert.equal(sampleValue(samples, 'hat_cloud_real_rows_total'), stats.rows);
  assert.equal(sampleValue(samples, 'hat_cloud_padded_rows_total'), stats.paddedRows);
  // Rows by the scheduler's class: requests of more than DEFAULT_SMALL_ROWS rows are prompt chunks.
  const chunkRows = results
    .flatMap((r) => r.metrics.chunkSizes)
    .filter((rows) => rows > DEFAULT_SMALL_ROWS)
    .reduce((a, b) => a + b, 0);
  assert.ok(chunkRows > 0);
  assert.equal(sampleValue(samples, 'hat_cloud_real_rows_total', { class: 'chunk' }), chunkRows);
  assert.equal(sampleValue(samples, 'hat_cloud_real_rows_total', { class: 'small' }), stats.rows - chunkRows);
  assert.equal(histogram(samples, 'hat_cloud_batch_rows').sum, stats.rows);
  assert.equal(histogram(samples, 'hat_cloud_batch_padded_rows').sum, stats.paddedRows);
  assert.equal(histogram(samples, 'hat_cloud_batch_padding_ratio').count, stats.runs);
  assert.equal(histogram(samples, 'hat_cloud_compute_seconds').count, stats.runs);
  const copySeconds = sampleValue(samples, 'hat_cloud_batch_copy_seconds_total');
  assert.ok(copySeconds <= histogram(samples, 'hat_cloud_compute_seconds').sum, 'copies are part of the compute time');
  assert.equal(copySeconds > 0, stats.batchedRuns > 0, `copy ${copySeconds} s over ${stats.batchedRuns} padded runs`);
  assert.equal(histogram(samples, 'hat_cloud_queue_wait_seconds').count, stats.requests);
  assert.equal(histogram(samples, 'hat_cloud_queue_wait_seconds', { kind: 'verification' }).count, rounds);
  assert.equal(sampleValue(samples, 'hat_cloud_sessions_opened_total'), prompts.length + 1);
  assert.equal(sampleValue(samples, 'hat_cloud_kv_positions'), 0);
  assert.equal(sampleValue(samples, 'hat_cloud_errors_total', { code: 'MANIFEST_MISMATCH' }), 1);
  assert.equal(sampleValue(samples, 'hat_cloud_errors_total'), 1);
  assert.equal(sampleValue(samples, 'hat_cloud_pending_requests'), 0);
  assert.ok(sampleValue(samples, 'process_cpu_seconds_total') > 0, 'default process metrics are there');
});

test('parsePrometheus reads labels in any order, escapes and +Inf buckets', () => {
  const samples = parsePrometheus(
    [
      '# HELP x_seconds x',
      '# TYPE x_seconds histogram',
      'x_seconds_bucket{le="1",kind="a"} 2',
      'x_seconds_bucket{kind="a",le="+Inf"} 3',
      'x_seconds_bucket{le="1",kind="b"} 1',
      'x_seconds_bucket{le="+Inf",kind="b"} 1',
      'x_seconds_sum{kind="a"} 4.5',
      'x_seconds_count{kind="a"} 3',
      'x_seconds_sum{kind="b"} 0.5',
      'x_seconds_count{kind="b"} 1',
      'odd{msg="a \\"q\\", b"} 7 1700000000000',
    ].join('\n'),
  );
  assert.deepEqual(histogram(samples, 'x_seconds'), {
    buckets: [
      { le: 1, count: 3 },
      { le: Infinity, count: 1 },
    ],
    count: 4,
    sum: 5,
  });
  assert.deepEqual(histogram(samples, 'x_seconds', { kind: 'a' }).buckets, [
    { le: 1, count: 2 },
    { le: Infinity, count: 1 },
  ]);
  assert.deepEqual(samples.at(-1), { name: 'odd', labels: { msg: 'a "q", b' }, value: 7 });
  assert.throws(() => parsePrometheus('not a sample'), /not a Prometheus sample line/);
});

test('joins the cost rule and --kv-memory refused are counted per run', async () => {
  const metrics = new CloudMetrics({ kvBytesPerPosition: 0, sessions: () => 0, pending: () => 0 });
  const run = { sessions: 1, rows: 5, paddedRows: 5, computeMs: 2, kind: 'small' as const };
  metrics.observeRun({ ...run, costRefused: 3, kvRefused: 1 });
  metrics.observeRun(run);
  metrics.observeRun({ ...run, costRefused: 2, kvRefused: 4 });
  const samples = parsePrometheus(await metrics.render());
  assert.equal(sampleValue(samples, 'hat_cloud_cost_refused_joins_total'), 5);
  assert.equal(sampleValue(samples, 'hat_cloud_kv_refused_joins_total'), 5);
  assert.equal(sampleValue(samples, 'hat_cloud_runs_total', { class: 'small' }), 3);
});

test("the cost rule's answers per pick and each worker's recent prediction error are exported", async () => {
  const errors = [{ solo: 0.1, batched: 0.4 }, { solo: 0.2 }];
  const metrics = new CloudMetrics({
    kvBytesPerPosition: 0,
    sessions: () => 0,
    pending: () => 0,
    costErrors: () => errors,
  });
  const run = { sessions: 2, rows: 5, paddedRows: 6, computeMs: 2, kind: 'small' as const };
  metrics.observeRun({ ...run, costRule: 'silent' });
  metrics.observeRun({ ...run, costRule: 'silent' });
  metrics.observeRun({ ...run, costRule: 'answered' });
  metrics.observeRun(run);
  const samples = parsePrometheus(await metrics.render());
  assert.equal(sampleValue(samples, 'hat_cloud_cost_rule_picks_total', { answer: 'silent' }), 2);
  assert.equal(sampleValue(samples, 'hat_cloud_cost_rule_picks_total', { answer: 'answered' }), 1);
  assert.equal(sampleValue(samples, 'hat_cloud_cost_model_error', { worker: '0', runs: 'batched' }), 0.4);
  assert.equal(sampleValue(samples, 'hat_cloud_cost_model_error', { worker: '1', runs: 'solo' }), 0.2);
  const batchedOfWorker1 = samples.filter(
    (s) => s.name === 'hat_cloud_cost_model_error' && s.labels.worker === '1' && s.labels.runs === 'batched',
  );
  assert.equal(batchedOfWorker1.length, 0, 'no batched prediction yet: no sample');
});
