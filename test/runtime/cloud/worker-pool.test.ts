/**
 * The worker pool on its own (no server, no sockets), over the toy middle part: h_out = h_in + Σ every hidden
 * state the session's cache holds, so each result tells exactly which rows the cache held when it ran.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { WorkerPool } from '../../../src/runtime/cloud/worker-pool.ts';
import type { MiddleRequest, MiddleResult } from '../../../src/runtime/cloud/executor.ts';
import { HatError } from '../../../src/errors.ts';
import { makeToySplitDir, TOY_HIDDEN, toyExpected } from '../../helpers/toy-split.ts';
import { withinDeadline } from '../../helpers/wait-for.ts';
import { repoRoot } from '../../helpers/shared-fixtures.ts';

const splitDir = makeToySplitDir();
after(() => rmSync(splitDir, { recursive: true, force: true }));

const request = (sessionId: number, pastLength: number, ...rows: number[][]): MiddleRequest => ({
  sessionId,
  pastLength,
  nTokens: rows.length,
  hidden: Float32Array.from(rows.flat()),
  allPositions: true,
});
const asRows = (result: MiddleResult) =>
  Array.from({ length: result.rows }, (_, i) => [...result.hidden.subarray(i * TOY_HIDDEN, (i + 1) * TOY_HIDDEN)]);
const isHatError = (code: string, message: RegExp) => (error: unknown) => {
  assert.ok(error instanceof HatError, `expected a HatError, got ${String(error)}`);
  assert.equal(error.code, code);
  assert.match(error.message, message);
  return true;
};

async function withPool(workers: number, body: (pool: WorkerPool) => Promise<void>, maxContext = 64): Promise<void> {
  const pool = await WorkerPool.start({ splitDir, workers, threadsPerWorker: 1, maxContext });
  try {
    await body(pool);
  } finally {
    await pool.close();
  }
}

test('one worker runs requests in arrival order; each session sees only its own cache', async () => {
  await withPool(1, async (pool) => {
    const a = [
      [1, 0, 0, 0],
      [0, 2, 0, 0],
      [0, 0, 3, 0],
    ];
    const b = [
      [10, 10, 10, 10],
      [0, 0, 0, 20],
    ];
    const settled: string[] = [];
    const submit = (label: string, req: MiddleRequest) =>
      pool.run(req).then((r) => {
        settled.push(label);
        return r;
      });
    // Submitted together: each one's pastLength assumes every earlier request of its session has run.
    const runs = [
      submit('a0', request(1, 0, a[0])),
      submit('b0', request(2, 0, b[0])),
      submit('a1', request(1, 1, a[1])),
      submit('a2', request(1, 2, a[2])),
      submit('b1', request(2, 1, b[1])),
    ];
    assert.equal(pool.pending, 5);
    const [a0, b0, a1, a2, b1] = await Promise.all(runs);
    assert.deepEqual(settled, ['a0', 'b0', 'a1', 'a2', 'b1']);
    assert.deepEqual(asRows(a0), toyExpected([], [a[0]]));
    assert.deepEqual(asRows(a1), toyExpected([a[0]], [a[1]]));
    assert.deepEqual(asRows(a2), toyExpected([a[0], a[1]], [a[2]]));
    assert.deepEqual(asRows(b0), toyExpected([], [b[0]]));
    assert.deepEqual(asRows(b1), toyExpected([b[0]], [b[1]]));
    assert.equal(pool.pending, 0);
    // Rolling back: pastLength 1 keeps a[0] only.
    assert.deepEqual(asRows(await pool.run(request(1, 1, b[1]))), toyExpected([a[0]], [b[1]]));
    // Only the last row for a prefill chunk.
    const last = await pool.run({ ...request(2, 0, a[0], a[1]), allPositions: false });
    assert.equal(last.rows, 1);
    assert.deepEqual(asRows(last), toyExpected([a[0]], [a[1]]));
  });
});

test('with several workers each session keeps its order and its cache on its own worker', async () => {
  await withPool(2, async (pool) => {
    const sessions = [7, 8, 9];
    const rowsOf = (s: number, i: number) => [s, i, s * i, 1];
    // Interleaved: round i of every session before round i + 1 of any.
    const runs = [0, 1, 2, 3].flatMap((i) =>
      sessions.map((s) => ({ s, i, result: pool.run(request(s, i, rowsOf(s, i))) })),
    );
    for (const { s, i, result } of runs) {
      const history = Array.from({ length: i }, (_, j) => rowsOf(s, j));
      assert.deepEqual(asRows(await result), toyExpected(history, [rowsOf(s, i)]), `session ${s} round ${i}`);
    }
  });
});

test('a session dropped while it runs: the run in flight ends, queued ones fail, its cache is gone', async () => {
  await withPool(1, async (pool) => {
    const x = [1, 2, 3, 4];
    const running = pool.run(request(1, 0, x));
    const queued = pool.run(request(1, 1, x));
    const bystander = pool.run(request(2, 0, x));
    pool.drop(1);
    await assert.rejects(queued, isHatError('RUNTIME', /^session closed$/));
    assert.deepEqual(asRows(await running), toyExpected([], [x]));
    assert.deepEqual(asRows(await bystander), toyExpected([], [x]));
    // The run that was in flight when the drop arrived did not store its cache: the id starts empty again.
    await assert.rejects(
      pool.run(request(1, 1, x)),
      isHatError('BAD_FRAME', /past length 1 is beyond the session's cache of 0 positions/),
    );
    assert.deepEqual(asRows(await pool.run(request(1, 0, [5, 5, 5, 5]))), toyExpected([], [[5, 5, 5, 5]]));
    // The bystander's cache survived the drop.
    assert.deepEqual(asRows(await pool.run(request(2, 1, x))), toyExpected([x], [x]));
    assert.equal(pool.pending, 0);
  });
});

test("a failed run rejects with the worker's error and leaves the worker serving", async () => {
  await withPool(
    1,
    async (pool) => {
      await assert.rejects(
        pool.run(request(3, 2, [1, 1, 1, 1])),
        isHatError('BAD_FRAME', /^past length 2 is beyond the session's cache of 0 positions$/),
      );
      await pool.run(request(3, 0, [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]));
      await assert.rejects(
        pool.run(request(3, 3, [1, 1, 1, 1], [1, 1, 1, 1])),
        isHatError('CONTEXT_LIMIT', /^the session would exceed the server's context limit of 4 positions$/),
      );
      assert.deepEqual(
        asRows(await pool.run(request(3, 3, [0, 0, 0, 1]))),
        toyExpected(
          [
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
          ],
          [[0, 0, 0, 1]],
        ),
      );
      assert.equal(pool.ready, true);
    },
    4,
  );
});

test("a worker that cannot load its part fails the pool's start with the worker's own error code", async () => {
  const empty = mkdtempSync(join(tmpdir(), 'hat-no-split-'));
  try {
    await assert.rejects(
      WorkerPool.start({ splitDir: empty, workers: 1, threadsPerWorker: 1, maxContext: 64 }),
      isHatError('BAD_MANIFEST', /has no manifest\.json/),
    );
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test("a worker's load failure reaches the pool with its code and its hint (the hint was dropped)", async () => {
  const split = mkdtempSync(join(tmpdir(), 'hat-bad-middle-'));
  try {
    const shipped = join(repoRoot, 'fixtures', 'default-split');
    for (const file of readdirSync(shipped)) symlinkSync(join(shipped, file), join(split, file));
    rmSync(join(split, 'middle.onnx'));
    writeFileSync(join(split, 'middle.onnx'), 'not an onnx model');
    await assert.rejects(
      WorkerPool.start({ splitDir: split, workers: 1, threadsPerWorker: 1, maxContext: 64 }),
      (error: unknown) =>
        isHatError('RUNTIME', /could not load middle part/)(error) && Boolean((error as HatError).hint),
    );
  } finally {
    rmSync(split, { recursive: true, force: true });
  }
});

test('a worker that dies rejects what it was given with a GOING_AWAY error naming it (devices resume)', async () => {
  await withPool(1, async (pool) => {
    // No request can crash a worker (every run is caught inside it), so end its thread from outside — while it is
    // idle: ending a thread during an onnxruntime run aborts the whole process (onnxruntime-node), which is why the
    // pool's close waits for runs. A request handed to the stopping thread never runs.
    assert.deepEqual(asRows(await pool.run(request(4, 0, [1, 1, 1, 1]))), toyExpected([], [[1, 1, 1, 1]]));
    const lanes = (pool as unknown as { lanes: Array<{ worker: Worker }> }).lanes;
    const exited = lanes[0].worker.terminate();
    const given = pool.run(request(4, 4, [1, 1, 1, 1]));
    const died = isHatError(
      'GOING_AWAY',
      /^middle worker 0 exited with code 1; the sessions it held lost their caches$/,
    );
    await assert.rejects(given, died);
    assert.equal(await exited, 1);
    assert.equal(pool.ready, false);
    assert.equal(pool.pending, 0);
    // Later requests for its sessions (and new sessions placed on it) get the same error at once; they used to
    // wait forever in a queue no worker would take.
    for (const sessionId of [4, 40]) {
      const late = pool.run(request(sessionId, 0, [1, 1, 1, 1]));
      await assert.rejects(withinDeadline(late, { what: 'a request to a dead worker' }), died);
    }
    assert.equal(pool.pending, 0);
  });
});

test('after one of two workers dies, new sessions go to the live one; its own sessions are unharmed', async () => {
  await withPool(2, async (pool) => {
    // Sessions 1 and 2 land on workers 0 and 1 (least loaded first).
    assert.deepEqual(asRows(await pool.run(request(1, 0, [1, 1, 1, 1]))), toyExpected([], [[1, 1, 1, 1]]));
    assert.deepEqual(asRows(await pool.run(request(2, 0, [2, 2, 2, 2]))), toyExpected([], [[2, 2, 2, 2]]));
    const lanes = (pool as unknown as { lanes: Array<{ worker: Worker }> }).lanes;
    assert.equal(await lanes[0].worker.terminate(), 1);
    await assert.rejects(pool.run(request(1, 1, [1, 1, 1, 1])), isHatError('GOING_AWAY', /middle worker 0/));
    for (const sessionId of [3, 4, 5]) {
      const fresh = await withinDeadline(pool.run(request(sessionId, 0, [3, 3, 3, 3])), { what: 'a new session' });
      assert.deepEqual(asRows(fresh), toyExpected([], [[3, 3, 3, 3]]));
    }
    const own = await pool.run(request(2, 1, [0, 0, 0, 2]));
    assert.deepEqual(asRows(own), toyExpected([[2, 2, 2, 2]], [[0, 0, 0, 2]]));
  });
});

test('a closed pool refuses new requests', async () => {
  const pool = await WorkerPool.start({ splitDir, workers: 1, threadsPerWorker: 1, maxContext: 64 });
  await pool.close();
  await assert.rejects(
    pool.run(request(5, 0, [1, 1, 1, 1])),
    isHatError('GOING_AWAY', /^the worker pool is shutting down$/),
  );
});
