/**
 * Batching through the real worker threads: requests queued while a worker is busy run as one padded run whose
 * outputs equal solo runs; a session dropped while its request is in a batch loses its cache and nobody else's;
 * --max-batch 1 is the pre-batching path, bit for bit.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EXPLORE_EVERY, WorkerPool } from '../../../src/runtime/cloud/worker-pool.ts';
import { budgetFromProbe, cheapestMsPerRow, type ProbeTime } from '../../../src/runtime/cloud/batch-knee.ts';
import { mergedRowsFor } from '../../../src/runtime/cloud/scheduler.ts';
import type { RunObservation } from '../../../src/runtime/cloud/cloud-metrics.ts';
import type { RowsAdviceWhen } from '../../../src/runtime/cloud/rows-advice.ts';
import { MiddleEngine } from '../../../src/runtime/cloud/middle-engine.ts';
import type { MiddleRequest, MiddleResult } from '../../../src/runtime/cloud/executor.ts';
import { createSession, type ModelSession } from '../../../src/runtime/session.ts';
import { partIO, readManifest } from '../../../src/runtime/split-dir.ts';
import { normalArray, seededRandom } from '../../../src/random.ts';
import { HatError } from '../../../src/errors.ts';
import { makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { makeToySplitDir } from '../../helpers/toy-split.ts';

let split: string;
let hidden: number;
let middle: ModelSession;
const random = seededRandom(5);

before(async () => {
  ({ split } = await makeSmallSplit());
  const manifest = readManifest(split);
  hidden = manifest.hidden.size;
  middle = await createSession(resolve(split, manifest.parts.middle.file), { threads: 1 }, 'middle part');
});

const request = (sessionId: number, pastLength: number, nTokens: number): MiddleRequest => ({
  sessionId,
  pastLength,
  nTokens,
  hidden: normalArray(random, nTokens * hidden, 1),
  allPositions: true,
});
const engine = (layout?: 'left') =>
  new MiddleEngine(middle, partIO(readManifest(split), 'middle'), { maxContext: 256, layout });
const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/** What each request gives when every request runs alone, in order, on an engine of its own. */
async function soloAnswers(requests: MiddleRequest[]): Promise<Float32Array[]> {
  const solo = engine();
  const answers: Float32Array[] = [];
  for (const r of requests) {
    const [result] = (await solo.run([r])).results;
    assert.ok(result.ok);
    answers.push(result.hidden);
  }
  return answers;
}

test('a session dropped while its request is in a batch: the batch ends, only its cache is gone', async () => {
  const batched = engine('left');
  const first = [request(1, 0, 4), request(2, 0, 6), request(3, 0, 2)];
  await batched.run(first);
  const second = [request(1, 4, 3), request(2, 6, 1), request(3, 2, 5)];
  const running = batched.run(second);
  batched.drop(2);
  const { results, paddedRows } = await running;
  assert.equal(paddedRows, 3 * 5, 'one padded run');
  assert.ok(
    results.every((r) => r.ok),
    'the run in flight ends for every session',
  );
  assert.equal(batched.cacheOf(2), undefined);
  assert.equal(batched.cacheOf(1)?.length, 7);
  assert.equal(batched.cacheOf(3)?.length, 7);
  // The others' caches are what solo runs give: their next round matches.
  const third = [request(1, 7, 2), request(3, 5, 1)];
  const after = await batched.run(third);
  const solo = await soloAnswers([first[0], first[2], second[0], second[2], ...third]);
  for (const [i, r] of after.results.entries()) {
    assert.ok(r.ok);
    assert.ok(maxAbs(r.hidden, solo[4 + i]) <= 1e-5);
  }
  // The dropped id starts from an empty cache again.
  const [again] = (await batched.run([request(2, 1, 1)])).results;
  assert.ok(!again.ok && /beyond the session's cache of 0 positions/.test(again.message));
});

async function withPool(
  maxBatch: number,
  body: (pool: WorkerPool) => Promise<void>,
  {
    costRule = false,
    kvPositions,
    rowsAdvice,
  }: { costRule?: boolean; kvPositions?: number; rowsAdvice?: RowsAdviceWhen } = {},
): Promise<void> {
  const pool = await WorkerPool.start({
    costRule,
    kvPositions,
    rowsAdvice,
    splitDir: split,
    workers: 1,
    threadsPerWorker: 1,
    maxContext: 256,
    batching: 'padded',
    inPlace: true,
    maxBatch,
    maxBatchTokens: 32, // fixed: the measured default would make the batches depend on this machine's timings
  });
  try {
    await body(pool);
  } finally {
    await pool.close();
  }
}

/** A long request keeps the worker busy while three sessions queue: they then form one batch. */
async function busyThenThree(pool: WorkerPool, drop?: number) {
  const blocker = request(9, 0, 64);
  const three = [request(1, 0, 5), request(2, 0, 3), request(3, 0, 7)];
  const busy = pool.run(blocker);
  const runs = three.map((r) => pool.run(r));
  await busy;
  // The worker's reply dispatched the next batch before `busy` settled: the three are in flight now.
  if (drop !== undefined) pool.drop(drop);
  return { three, results: await Promise.all(runs) };
}

test('requests queued while the worker is busy run as one padded batch that equals solo runs', async () => {
  await withPool(16, async (pool) => {
    const { three, results } = await busyThenThree(pool, 2);
    assert.equal(pool.stats.batchedRuns, 1);
    assert.equal(pool.stats.largestBatch, 3);
    assert.equal(pool.stats.paddedRows, 64 + 3 * 7);
    assert.ok(
      results.every((r) => r.computeMs === results[0].computeMs),
      'the three share one run',
    );
    const solo = await soloAnswers(three);
    results.forEach((r, i) => assert.ok(maxAbs(r.hidden, solo[i]) <= 1e-5, `session ${three[i].sessionId}`));
    // Session 2 was dropped with its request in that batch: its cache is gone, 1's and 3's are kept.
    await assert.rejects(pool.run(request(2, 3, 1)), (e: HatError) => /cache of 0 positions/.test(e.message));
    const next: MiddleResult = await pool.run(request(1, 5, 2));
    assert.equal(next.rows, 2);
    assert.equal(pool.pending, 0);
  });
});

test("a padded run's group is remembered only for sessions left with a view of it (repeats read it)", async () => {
  await withPool(16, async (pool) => {
    const groups = (pool as unknown as { lanes: Array<{ groups: Map<number, unknown> }> }).lanes[0].groups;
    // Session 2 is dropped while its request is in the padded run: no group comes back for it afterwards.
    await busyThenThree(pool, 2);
    assert.deepEqual([...groups.keys()].sort(), [1, 3]);
    assert.deepEqual(groups.get(1), groups.get(3));
    assert.match(JSON.stringify(groups.get(1)), /"size":3,"width":\d+/);
    // A batch of two whose second request the engine refuses (a past beyond its cache): the first runs alone, so
    // neither is in a group, and the cost model is not taught a batched run.
    const busy = pool.run(request(9, 64, 32));
    const alone = pool.run(request(1, 5, 2));
    const refused = pool.run(request(4, 5, 2));
    await busy;
    await alone;
    await assert.rejects(refused, (e: HatError) => e.code === 'BAD_FRAME');
    assert.equal(groups.has(1), false, `session 1 ran alone but has group ${JSON.stringify(groups.get(1))}`);
    assert.equal(groups.has(4), false);
  });
});

for (const costRule of [true, false]) {
  const what = costRule
    ? 'with --cost-rule on, a rule that refuses every batch still lets every few batches form (so it can learn)'
    : 'with --cost-rule off (the default) the fitted run cost is not consulted';
  test(what, async () => {
    await withPool(
      16,
      async (pool) => {
        // The worker's run-cost model, replaced by one sure that batching never pays (a locked-in fit).
        const lane = (pool as unknown as { lanes: Array<{ cost: unknown }> }).lanes[0];
        lane.cost = {
          predict: (shape: { sessions: number }) => (shape.sessions > 1 ? 1e9 : 1),
          observe() {},
        };
        const labels: Array<string | undefined> = [];
        pool.onRun = (run) => labels.push(run.costRule);
        for (let round = 0; round < 16; round++) await busyThenThree(pool);
        if (!costRule) {
          assert.ok(labels.every((label) => label === undefined));
          return assert.equal(pool.stats.batchedRuns, 16);
        }
        // Every pick in which the scheduler asked the rule is labelled; this rule always answers.
        assert.ok(labels.includes('answered') && !labels.includes('silent'), labels.join());
        // Picks with several sessions queued: at most two a round (three queued, then two). Only the exploring ones
        // (every EXPLORE_EVERY-th) form a batch.
        assert.ok(pool.stats.batchedRuns >= 1, 'no batch formed: the rule locked batching out');
        assert.ok(pool.stats.batchedRuns <= (16 * 2) / EXPLORE_EVERY, `${pool.stats.batchedRuns} batched runs`);
      },
      { costRule },
    );
  });
}

test("a prompt's chunks queued behind a busy worker run as one request, each answered as its solo run", async () => {
  await withPool(16, async (pool) => {
    const blocker = request(9, 0, 64);
    // A prefill chunk asks for its last row only; the 5-row tail is small by rows but continues the prompt.
    const chunks = [request(1, 0, 20), { ...request(1, 20, 20), allPositions: false }, request(1, 40, 5)];
    const busy = pool.run(blocker);
    const runs = chunks.map((r) => pool.run(r));
    await busy;
    const results = await Promise.all(runs);
    assert.equal(pool.stats.runs, 2, 'the blocker, then the three chunks in one run');
    assert.equal(pool.stats.requests, 4);
    assert.equal(pool.stats.batchedRuns, 0, 'one session is not a batch');
    assert.equal(pool.stats.largestBatch, 1);
    assert.deepEqual(
      results.map((r) => r.rows),
      [20, 1, 5],
    );
    const solo = await soloAnswers(chunks);
    results.forEach((r, i) => {
      assert.equal(r.hidden.length, solo[i].length);
      assert.ok(maxAbs(r.hidden, solo[i]) <= 1e-5, `chunk ${i}`);
    });
    // The session's cache holds all 45 positions: its next round continues from there.
    const round = request(1, 45, 2);
    const next = await pool.run(round);
    const [expected] = (await soloAnswers([...chunks, round])).slice(3);
    assert.ok(maxAbs(next.hidden, expected) <= 1e-5);
  });
});

test('--max-batch 1 runs every request alone, exactly as before batching', async () => {
  await withPool(1, async (pool) => {
    const { three, results } = await busyThenThree(pool);
    assert.equal(pool.stats.batchedRuns, 0);
    assert.equal(pool.stats.runs, 4);
    const solo = await soloAnswers(three);
    results.forEach((r, i) => assert.deepEqual(r.hidden, solo[i], `session ${three[i].sessionId} is bit-identical`));
  });
});

test('serve-cloud logs how it batches at start: from the manifest, or from middle.onnx for older splits', async () => {
  const started = async (splitDir: string, more: { minBatch?: number; maxBatchTokens?: number } = {}) => {
    const events: Array<Record<string, unknown>> = [];
    const cloud = await serveSplit(splitDir, {
      threadsPerWorker: 2,
      maxContext: 64,
      ...more,
      logger: { log: (event, fields) => events.push({ event, ...fields }) },
    });
    await cloud.server.stop();
    return events.find((e) => e.event === 'batching');
  };
  const { knee, ...logged } = (await started(split))!;
  assert.deepEqual(logged, {
    event: 'batching',
    mode: 'padded',
    reason: readManifest(split).batching!.reason,
    inPlace: true,
    decidedBy: 'manifest',
    maxBatch: 16,
    maxBatchTokens: (knee as { rows: number }).rows,
    mergedRows: mergedRowsFor(cheapestMsPerRow((knee as { times: ProbeTime[] }).times)),
    minBatch: 2,
    costRule: 'off',
    rowsAdvice: 'off',
  });
  // --max-batch-tokens left to its default: the knee probe timed a run of each row count that fits the context.
  const { times } = knee as { times: Array<{ rows: number; ms: number }> };
  assert.deepEqual(
    times.map((t) => t.rows),
    [8, 16, 32, 64],
  );
  assert.ok(times.every((t) => t.ms > 0));
  // Two threads per worker: the fallback is 64 rows, the least budget when the probe did not bracket the knee.
  assert.equal((knee as { rows: number }).rows, budgetFromProbe(times, 64)!.rows);
  // --min-batch reaches the scheduler's limits (scheduler.test.ts checks what it does there).
  assert.equal((await started(split, { minBatch: 3, maxBatchTokens: 32 }))?.minBatch, 3);
  // The toy split's manifest predates the field; its middle part fixes the batch size to 1.
  const toy = await started(makeToySplitDir());
  assert.equal(toy?.mode, 'none');
  assert.equal(toy?.decidedBy, 'middle.onnx (the split predates the field)');
  assert.equal(toy?.maxBatch, 1);
  // A split written before `batching.inPlace` (or before `batching`): fed in place unless its config.json declares a
  // sliding window.
  const older = (window?: number, field: 'inPlace' | 'batching' = 'inPlace') => {
    const dir = join(mkdtempSync(join(tmpdir(), 'hat-older-split-')), 'split');
    cpSync(split, dir, { recursive: true });
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    if (field === 'inPlace') delete manifest.batching.inPlace;
    else delete manifest.batching;
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', sliding_window: window ?? null }));
    return dir;
  };
  assert.equal((await started(older()))?.inPlace, true);
  assert.equal((await started(older(32)))?.inPlace, false);
  assert.equal((await started(older(undefined, 'batching')))?.inPlace, true);
  const noField = await started(older(32, 'batching'));
  assert.equal(noField?.decidedBy, 'middle.onnx (the split predates the field)');
  assert.equal(noField?.inPlace, false, 'the window counts when the whole field is decided again');
  assert.match(String(noField?.reason), /32-position sliding window/);
});

test('sessions batched together again run as that batch, fed its presents in place, equal to solo runs', async () => {
  await withPool(3, async (pool) => {
    const seen: RunObservation[] = [];
    pool.onRun = (run) => seen.push(run);
    /** Queues `requests` while `blocker` keeps the worker busy. */
    const behind = async (blocker: MiddleRequest, requests: MiddleRequest[]) => {
      const busy = pool.run(blocker);
      const runs = requests.map((r) => pool.run(r));
      await busy;
      return Promise.all(runs);
    };
    const first = [request(1, 0, 4), request(2, 0, 4), request(3, 0, 4)];
    await behind(request(9, 0, 32), first);
    // Session 4 queues between 1 and 2: oldest first would run 1, 4 and 2; the repeat runs 1, 2 and 3.
    const second = [request(1, 4, 1), request(4, 0, 1), request(2, 3, 2), request(3, 4, 1)];
    const results = await behind(request(9, 32, 32), second);
    const repeat = seen.find((run) => run.inPlace);
    assert.ok(repeat, `no run was fed in place: ${JSON.stringify(seen)}`);
    assert.equal(repeat.sessions, 3);
    const solo = await soloAnswers([...first, ...second]);
    results.forEach((r, i) => assert.ok(maxAbs(r.hidden, solo[3 + i]) <= 1e-5, `session ${second[i].sessionId}`));
  });
});

test('a cost rule that has no answer yet is reported silent in the picks that asked it, and batches form', async () => {
  await withPool(
    16,
    async (pool) => {
      const lane = (pool as unknown as { lanes: Array<{ cost: unknown }> }).lanes[0];
      lane.cost = { predict: () => undefined, observe() {} };
      const labels: Array<string | undefined> = [];
      pool.onRun = (run) => labels.push(run.costRule);
      await busyThenThree(pool);
      assert.deepEqual(labels, [undefined, 'silent'], 'the blocker ran alone without asking; the three asked');
      assert.equal(pool.stats.batchedRuns, 1);
    },
    { costRule: true },
  );
});

test("--kv-memory: a worker's batches allocate no more cache positions than its share has free", async () => {
  // The blocker's cache holds 64 of 79 positions: 15 are free. Sessions 1 and 2 (5 and 3 rows at past 0) need 2 × 5
  // for their presents; with session 3 (7 rows) the run would need 3 × 7.
  await withPool(
    16,
    async (pool) => {
      let kvRefused = 0;
      pool.onRun = (run) => (kvRefused += run.kvRefused ?? 0);
      const { three, results } = await busyThenThree(pool);
      assert.equal(pool.stats.largestBatch, 2);
      assert.equal(kvRefused, 1);
      const solo = await soloAnswers(three);
      results.forEach((r, i) => assert.ok(maxAbs(r.hidden, solo[i]) <= 1e-5, `session ${three[i].sessionId}`));
    },
    { kvPositions: 64 + 15 },
  );
});

test('results advise rows only once the worker is saturated (--rows-advice saturated)', async () => {
  await withPool(
    16,
    async (pool) => {
      // Alone on an idle worker: no advice (with 'always' a lone session would be advised the whole 32-row budget).
      assert.equal((await pool.run(request(1, 0, 7))).advisedRows, 0);
      // Four sessions keep the worker busy back to back (each resends at past 0, so caches stay small) until a result
      // carries advice: the busy share passes SATURATED_BUSY_SHARE after ~2 s of this.
      const deadline = performance.now() + 20_000;
      const advised: number[] = [];
      const keepBusy = async (sessionId: number) => {
        while (advised.length === 0 && performance.now() < deadline) {
          const { advisedRows } = await pool.run(request(sessionId, 0, 3));
          if (advisedRows) advised.push(advisedRows);
        }
      };
      await Promise.all([2, 3, 4, 5].map(keepBusy));
      assert.ok(advised.length > 0, 'no advice within 20 s of a saturated worker');
      assert.ok(advised[0] >= 32 / 5 && advised[0] <= 32, `advised ${advised[0]} rows to ~4 sessions sharing 32`);
    },
    { rowsAdvice: 'saturated' },
  );
});
