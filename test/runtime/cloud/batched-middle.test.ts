/**
 * Batched middle runs equal solo runs: ragged pasts, ragged row counts, rollbacks and new sessions in one padded
 * run give every session the outputs and the cache it gets alone (fp32 ≤ 1e-5, fp16 ≤ 2e-3), on hat's own
 * builder, the shipped default split, the decoder families in test/fixtures/families, and the shared fixtures'
 * splits (skipped without ../shared), whether the pasts are gathered or the same sessions' last presents are fed
 * back in place. A GroupQueryAttention split batches one-row requests with right-padded pasts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLlamaOnnx } from '../../../src/models/llama-onnx.ts';
import { randomWeights } from '../../../src/models/weights.ts';
import { splitModel } from '../../../src/split/split.ts';
import { silentReporter } from '../../../src/reporter.ts';
import { SMALL_LLAMA } from '../../helpers/runtime-fixtures.ts';
import { repoRoot, sharedFixture } from '../../helpers/shared-fixtures.ts';
import { writeGenaiDecoder } from '../../split/genai-decoder.ts';
import { MiddleEngine } from '../../../src/runtime/cloud/middle-engine.ts';
import { createSession } from '../../../src/runtime/session.ts';
import { partIO, readManifest } from '../../../src/runtime/split-dir.ts';
import { normalArray, seededRandom } from '../../../src/random.ts';
import {
  batchedVersusSolo,
  IN_PLACE_ONE_ROW_ROUNDS,
  IN_PLACE_ROUNDS,
  ONE_ROW_ROUNDS,
  RAGGED_ROUNDS,
} from './batch-exactness.ts';

/** A split of a small GQA Llama from hat's builder (weights std 0.15, as the builder's own tests use). */
async function builderSplit(dtype: 'float32' | 'float16'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), `hat-batch-${dtype}-`));
  await writeLlamaOnnx(SMALL_LLAMA, randomWeights({ seed: 3, std: 0.15 }), join(dir, 'model.onnx'), { dtype });
  const { manifest } = await splitModel({ model: join(dir, 'model.onnx'), out: join(dir, 'split') }, silentReporter);
  assert.equal(manifest.hidden.dtype, dtype);
  return join(dir, 'split');
}

for (const [dtype, tolerance] of [
  ['float32', 1e-5],
  ['float16', 2e-3],
] as const) {
  test(`builder model, ${dtype}: a padded batch equals each session alone within ${tolerance}`, async (t) => {
    await assertBatchesExactly(t, await builderSplit(dtype), tolerance);
  });
}

/**
 * Ragged rounds (pasts gathered) and the same sessions batched again (the last run's presents read in place, holes
 * and all) both equal each session alone; left padding.
 */
async function assertBatchesExactly(t: TestContext, split: string, tolerance: number): Promise<void> {
  const ragged = await batchedVersusSolo(split, 'left');
  t.diagnostic(`gathered: max |batched − solo| = ${ragged.maxAbsError.toExponential(2)}`);
  assert.equal(ragged.batchedRuns, RAGGED_ROUNDS.length, 'every round ran as one padded batch');
  assert.ok(ragged.maxAbsError <= tolerance, `max abs error ${ragged.maxAbsError}`);
  const inPlace = await batchedVersusSolo(split, 'left', IN_PLACE_ROUNDS);
  t.diagnostic(`in place: max |batched − solo| = ${inPlace.maxAbsError.toExponential(2)}`);
  assert.equal(inPlace.batchedRuns, IN_PLACE_ROUNDS.length);
  const expected = readManifest(split).batching?.inPlace === false ? 0 : IN_PLACE_ROUNDS.length - 1;
  assert.equal(inPlace.inPlaceRuns, expected, 'every round after the first fed its pasts in place, where allowed');
  assert.ok(inPlace.maxAbsError <= tolerance, `max abs error in place ${inPlace.maxAbsError}`);
}

test('the shipped default split batches exactly', async (t) => {
  await assertBatchesExactly(t, join(repoRoot, 'fixtures', 'default-split'), 1e-5);
});

for (const [name, tolerance] of [
  ['hf-tiny-gpt2-opset17', 1e-5],
  ['genai-tiny-llama-fp16', 2e-3],
] as const) {
  const fixture = sharedFixture(name, 'model.onnx');
  test(`the ${name} split batches exactly`, { skip: fixture.skip }, async (t) => {
    const split = join(mkdtempSync(join(tmpdir(), 'hat-batch-fx-')), 'split');
    await splitModel({ model: fixture.path, out: split }, silentReporter);
    await assertBatchesExactly(t, split, tolerance);
  });
}

/** Splits a model with default options and checks the batching mode `hat split` recorded for it. */
async function splitExpecting(model: string, mode: string): Promise<string> {
  const split = join(mkdtempSync(join(tmpdir(), 'hat-batch-family-')), 'split');
  const { manifest } = await splitModel({ model, out: split }, silentReporter);
  assert.equal(manifest.batching?.mode, mode, manifest.batching?.reason);
  return split;
}

// ALiBi from attention_mask (bloom), sandwich norms + MQA (gemma), partial rotary (phi, gpt-neox), a 4-position
// sliding window that the ragged rounds' pasts exceed (mistral), qkv bias + external data (qwen2).
for (const family of ['bloom', 'gemma', 'phi', 'mistral', 'gpt-neox', 'qwen2']) {
  test(`the ${family} family splits as 'padded' and batches exactly`, async (t) => {
    const split = await splitExpecting(join(repoRoot, 'test', 'fixtures', 'families', family, 'model.onnx'), 'padded');
    await assertBatchesExactly(t, split, 1e-5);
  });
}

test('a sliding-window split gathers its pasts every round: holes would stretch the window', async (t) => {
  const split = await splitExpecting(join(repoRoot, 'test', 'fixtures', 'families', 'mistral', 'model.onnx'), 'padded');
  const { batching } = readManifest(split);
  assert.equal(batching?.inPlace, false, batching?.reason);
  assert.match(batching!.reason, /4-position sliding window/);
  // Why: the window hides keys by index distance, and a fed-back present puts holes between a past and new rows.
  const forced = await batchedVersusSolo(split, 'left', IN_PLACE_ROUNDS, true);
  t.diagnostic(`fed in place anyway: max |batched − solo| = ${forced.maxAbsError.toExponential(2)}`);
  assert.ok(
    forced.inPlaceRuns > 0 && forced.maxAbsError > 1e-2,
    `in place happened to be exact (${forced.maxAbsError})`,
  );
});

test('GroupQueryAttention splits as single-row: one-row requests batch exactly, pasts right-padded', async (t) => {
  const model = await writeGenaiDecoder(mkdtempSync(join(tmpdir(), 'hat-batch-gqa-')));
  const split = await splitExpecting(model, 'single-row');
  const right = await batchedVersusSolo(split, 'right', ONE_ROW_ROUNDS);
  t.diagnostic(`right-padded: max |batched − solo| = ${right.maxAbsError.toExponential(2)}`);
  assert.equal(right.batchedRuns, ONE_ROW_ROUNDS.length);
  assert.ok(right.maxAbsError <= 1e-5, `max abs error ${right.maxAbsError}`);
  const inPlace = await batchedVersusSolo(split, 'right', IN_PLACE_ONE_ROW_ROUNDS);
  t.diagnostic(`right-padded, in place: max |batched − solo| = ${inPlace.maxAbsError.toExponential(2)}`);
  assert.equal(inPlace.inPlaceRuns, IN_PLACE_ONE_ROW_ROUNDS.length - 1);
  assert.ok(inPlace.maxAbsError <= 1e-5, `max abs error ${inPlace.maxAbsError}`);
  // Why the layout matters: GQA reads each row's length from Σmask, so a left-padded past is read wrongly.
  const left = await batchedVersusSolo(split, 'left', ONE_ROW_ROUNDS);
  t.diagnostic(`left-padded: max |batched − solo| = ${left.maxAbsError.toExponential(2)}`);
  assert.ok(left.maxAbsError > 1e-2, `left padding happened to be exact (${left.maxAbsError})`);
});

/**
 * A batching engine on the builder split's middle part, and `run`: one engine run of random rows for each listed
 * session, all at `pastLength` with `nTokens` rows.
 */
async function builderEngine(seed: number, options: { maxHeldPositions?: number } = {}) {
  const split = await builderSplit('float32');
  const manifest = readManifest(split);
  const session = await createSession(join(split, manifest.parts.middle.file), { threads: 1 }, 'middle part');
  const engine = new MiddleEngine(session, partIO(manifest, 'middle'), { maxContext: 256, layout: 'left', ...options });
  const random = seededRandom(seed);
  const run = (sessions: number[], pastLength: number, nTokens: number) =>
    engine.run(
      sessions.map((sessionId) => ({
        sessionId,
        pastLength,
        nTokens,
        allPositions: true,
        hidden: normalArray(random, nTokens * manifest.hidden.size, 1),
      })),
    );
  return { session, engine, run };
}

test("sessions keep views into a batch's presents until they use less than half of them", async () => {
  const { session, engine, run } = await builderEngine(5);
  const round = async (sessions: number[], pastLength: number, nTokens: number) => {
    const { results } = await run(sessions, pastLength, nTokens);
    assert.ok(results.every((r) => r.ok));
  };
  // Four sessions, 3 positions each: one batch whose presents hold 4 × 3 positions, all in use.
  await round([1, 2, 3, 4], 0, 3);
  assert.equal(engine.sharedPresents, 1);
  // Sessions 3 and 4 still use half of the first batch: it is kept, beside the second.
  await round([1, 2], 3, 2);
  assert.equal(engine.sharedPresents, 2);
  // Session 3 moves on: session 4 alone uses a quarter of the first batch, so its cache is copied out.
  await round([3], 3, 1);
  assert.equal(engine.sharedPresents, 1);
  assert.equal(engine.cacheOf(4)?.length, 3);
  engine.drop(1);
  engine.drop(2);
  assert.equal(engine.sharedPresents, 0, 'dropping the last sessions of a batch frees its presents');
  await session.release();
});

test('dropping sessions copies the rest out of a batch they leave too little of, not waiting for a run', async () => {
  const { session, engine, run } = await builderEngine(6);
  await run([1, 2, 3, 4], 0, 3);
  engine.drop(2);
  assert.equal(engine.sharedPresents, 1, 'three of four rows still in use: the presents are kept');
  engine.drop(3);
  engine.drop(4);
  // Session 1 alone would keep 4 × 3 positions alive for its 3 (held KV is meant to stay within twice the need).
  assert.equal(engine.sharedPresents, 0);
  assert.equal(engine.cacheOf(1)?.length, 3);
  const next = await run([1], 3, 1);
  assert.ok(next.results[0].ok);
  await session.release();
});

test('past its share of --kv-memory, a worker copies every view out: it holds what its sessions need', async () => {
  for (const [maxHeldPositions, kept] of [
    [undefined, 1],
    [16, 1],
    [15, 0],
  ] as const) {
    const { session, engine, run } = await builderEngine(12, { maxHeldPositions });
    await run([1, 2, 3, 4], 0, 3);
    // Session 1 moves on alone: its own 4 positions beside the batch's 4 × 3, which 2, 3 and 4 still use 9 of.
    await run([1], 3, 1);
    assert.equal(engine.sharedPresents, kept, `budget ${maxHeldPositions}`);
    for (const id of [2, 3, 4]) assert.equal(engine.cacheOf(id)?.length, 3);
    await session.release();
  }
});

test('a solo run that fails after rolling its cache back keeps the session usable at that length', async () => {
  const split = await builderSplit('float32');
  const manifest = readManifest(split);
  const session = await createSession(join(split, manifest.parts.middle.file), { threads: 1 }, 'middle part');
  const io = partIO(manifest, 'middle');
  const engine = new MiddleEngine(session, io, { maxContext: 256, layout: 'left' });
  const solo = new MiddleEngine(session, io, { maxContext: 256 });
  const random = seededRandom(11);
  const request = (sessionId: number, pastLength: number, nTokens: number) => ({
    sessionId,
    pastLength,
    nTokens,
    allPositions: true,
    hidden: normalArray(random, nTokens * manifest.hidden.size, 1),
  });
  const setup = [request(1, 0, 6), request(2, 0, 2)];
  for (const e of [engine, solo]) for (const r of setup) await e.run([r]);
  // The rollback (6 → 5) compacts session 1's own cache in place; then onnxruntime fails (out of memory, say).
  const run = session.run.bind(session);
  session.run = async () => {
    session.run = run;
    throw new Error('injected onnxruntime failure');
  };
  const [failed] = (await engine.run([request(1, 5, 1)])).results;
  assert.equal(!failed.ok && failed.code, 'RUN_FAILED');
  assert.equal(engine.cacheOf(1)?.length, 5, 'the cache is the rolled-back one');
  // The device retries, batched with session 2 (the cache is read by the gather) and then alone.
  const retry = request(1, 5, 1);
  const batched = (await engine.run([retry, request(2, 2, 1)])).results[0];
  const [alone] = (await solo.run([retry])).results;
  assert.ok(batched.ok && alone.ok, `retry: ${!batched.ok ? batched.message : ''}`);
  assert.ok(Math.max(...batched.hidden.map((v, i) => Math.abs(v - alone.hidden[i]))) <= 1e-5);
  const again = request(1, 6, 1);
  const [next] = (await engine.run([again])).results;
  const [nextAlone] = (await solo.run([again])).results;
  assert.ok(next.ok && nextAlone.ok);
  assert.ok(Math.max(...next.hidden.map((v, i) => Math.abs(v - nextAlone.hidden[i]))) <= 1e-5);
  await session.release();
});

test("a solo run that copies a session's cache out of a batch's presents counts the copy in copyMs", async () => {
  const { session, engine, run } = await builderEngine(7);
  await run([1, 2], 0, 3); // both caches are now views into this batch's presents
  const fromView = await run([1], 3, 1);
  assert.ok(fromView.results[0].ok);
  assert.ok(fromView.copyMs > 0, 'the copy out of the presents was not counted');
  assert.equal(engine.sharedPresents, 1, 'session 2 still uses half of the batch: nothing was compacted');
  const ownCache = await run([1], 4, 1);
  assert.equal(ownCache.copyMs, 0, 'a cache of its own is fed as it is');
  await session.release();
});

test('a session whose run gives non-finite values fails and keeps no cache: later batches never see it', async () => {
  const split = await builderSplit('float32');
  const manifest = readManifest(split);
  const session = await createSession(join(split, manifest.parts.middle.file), { threads: 1 }, 'middle part');
  const engine = new MiddleEngine(session, partIO(manifest, 'middle'), { maxContext: 256, layout: 'left' });
  const solo = new MiddleEngine(session, partIO(manifest, 'middle'), { maxContext: 256 });
  const size = manifest.hidden.size;
  const random = seededRandom(9);
  const rows = (n: number) => normalArray(random, n * size, 1);
  const request = (sessionId: number, pastLength: number, hidden: Float32Array) => ({
    sessionId,
    pastLength,
    nTokens: hidden.length / size,
    allPositions: true,
    hidden,
  });
  // The server refuses non-finite wire values, but finite ones can still overflow inside a part (a float16 input
  // past 65,504, a large activation): feed a NaN straight to the engine to stand for that.
  const [poisoned] = (await engine.run([request(1, 0, new Float32Array(size).fill(Number.NaN))])).results;
  assert.equal(poisoned.ok, false);
  assert.equal(!poisoned.ok && poisoned.code, 'RUN_FAILED');
  assert.equal(engine.cacheOf(1), undefined, 'the poisoned cache was kept');
  // Had it been kept, session 1's past would sit in row 0 of the reused past buffer, and session 2's shorter past
  // in a later batch would read its stale slots as left padding.
  const followUp = await engine.run([request(1, 1, rows(8)), request(3, 0, rows(2))]);
  assert.equal(followUp.results[0].ok, false);
  const inputs = { 2: rows(2), 4: rows(9) };
  for (const [id, hidden] of Object.entries(inputs)) {
    await engine.run([request(Number(id), 0, hidden)]);
    await solo.run([request(Number(id), 0, hidden)]);
  }
  const next = { 2: rows(1), 4: rows(1) };
  const batched = await engine.run([request(2, 2, next[2]), request(4, 9, next[4])]);
  const alone = await solo.run([request(2, 2, next[2])]);
  assert.ok(batched.results.every((r) => r.ok && r.hidden.every(Number.isFinite)));
  const got = batched.results[0].ok ? batched.results[0].hidden : new Float32Array();
  const want = alone.results[0].ok ? alone.results[0].hidden : new Float32Array();
  assert.ok(Math.max(...got.map((v, i) => Math.abs(v - want[i]))) <= 1e-5);
  await session.release();
});
