/**
 * Drives two MiddleEngines on one middle part through the same rounds — one running each round as a padded batch,
 * the other every request alone — and measures how far the batched outputs and caches are from the solo ones.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { MiddleEngine } from '../../../src/runtime/cloud/middle-engine.ts';
import type { PastLayout } from '../../../src/runtime/cloud/padded-batch.ts';
import { batchingOf } from '../../../src/runtime/cloud/serve.ts';
import { createSession, tensorToFloat32 } from '../../../src/runtime/session.ts';
import { partIO, readManifest } from '../../../src/runtime/split-dir.ts';
import { normalArray, seededRandom } from '../../../src/random.ts';

/** [session, pastLength, rows]: ragged prefills, verifications with rollbacks, a new session, one-row steps. */
export const RAGGED_ROUNDS: Array<Array<[number, number, number]>> = [
  [
    [1, 0, 3],
    [2, 0, 7],
    [3, 0, 1],
    [4, 0, 12],
    [5, 0, 5],
  ],
  [
    [1, 3, 4],
    [2, 5, 1],
    [3, 1, 6],
    [4, 12, 2],
    [5, 2, 3],
  ],
  [
    [2, 6, 3],
    [4, 13, 1],
    [6, 0, 4],
    [1, 0, 2],
  ],
  [
    [3, 7, 1],
    [6, 4, 1],
    [1, 2, 1],
    [5, 5, 1],
  ],
];

/** Every session takes one row per round on pasts of different lengths (what 'single-row' splits batch). */
export const ONE_ROW_ROUNDS: Array<Array<[number, number, number]>> = [
  [
    [1, 0, 1],
    [2, 0, 1],
    [3, 0, 1],
  ],
  [
    [1, 1, 1],
    [2, 1, 1],
    [4, 0, 1],
  ],
  [
    [1, 2, 1],
    [2, 0, 1],
    [3, 1, 1],
    [4, 1, 1],
  ],
  [
    [1, 3, 1],
    [3, 2, 1],
    [4, 2, 1],
  ],
];

/**
 * The same four sessions every round, in a different order each time, with rejected drafts, row counts that
 * leave padded rows, and a rollback: every round after the first can feed the last run's presents back in place
 * (real pasts fill 14/16, 22/28 and 25/32 of them), so views with holes are read and extended.
 */
export const IN_PLACE_ROUNDS: Array<Array<[number, number, number]>> = [
  [
    [1, 0, 4],
    [2, 0, 4],
    [3, 0, 4],
    [4, 0, 4],
  ],
  [
    [3, 3, 3],
    [1, 4, 2],
    [4, 3, 2],
    [2, 4, 1],
  ],
  [
    [2, 5, 1],
    [4, 5, 1],
    [1, 6, 1],
    [3, 6, 1],
  ],
  [
    [1, 7, 1],
    [3, 7, 1],
    [2, 6, 1],
    [4, 5, 1],
  ],
];

/** One-row steps of the same three sessions (GQA's 'single-row' batches), fed in place after the first round. */
export const IN_PLACE_ONE_ROW_ROUNDS: Array<Array<[number, number, number]>> = [
  [
    [1, 0, 1],
    [2, 0, 1],
    [3, 0, 1],
  ],
  [
    [2, 1, 1],
    [1, 1, 1],
    [3, 1, 1],
  ],
  [
    [3, 2, 1],
    [1, 2, 1],
    [2, 1, 1],
  ],
];

export interface Exactness {
  /** Largest |batched − solo| over every real output row and every cached position. */
  maxAbsError: number;
  /** Runs that went through the padded path (rows computed = sessions × the longest request). */
  batchedRuns: number;
  /** Padded runs that fed the previous run's presents back as their pasts. */
  inPlaceRuns: number;
}

/** `inPlace` defaults to what serve-cloud would do with the split. */
export async function batchedVersusSolo(
  splitDir: string,
  layout: PastLayout,
  rounds = RAGGED_ROUNDS,
  inPlace?: boolean,
): Promise<Exactness> {
  const manifest = readManifest(splitDir);
  const session = await createSession(resolve(splitDir, manifest.parts.middle.file), { threads: 1 }, 'middle part');
  const io = partIO(manifest, 'middle');
  const allowed = inPlace ?? (await batchingOf(splitDir, manifest)).inPlace;
  const batched = new MiddleEngine(session, io, { maxContext: 256, layout, inPlace: allowed });
  const solo = new MiddleEngine(session, io, { maxContext: 256 });
  const random = seededRandom(7);
  let maxAbsError = 0;
  let batchedRuns = 0;
  let inPlaceRuns = 0;
  const worst = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    assert.equal(a.length, b.length);
    for (let i = 0; i < a.length; i++) maxAbsError = Math.max(maxAbsError, Math.abs(a[i] - b[i]));
  };
  for (const round of rounds) {
    const requests = round.map(([sessionId, pastLength, nTokens], i) => ({
      sessionId,
      pastLength,
      nTokens,
      allPositions: i % 2 === 0,
      hidden: normalArray(random, nTokens * manifest.hidden.size, 1),
    }));
    const together = await batched.run(requests);
    if (together.paddedRows === requests.length * Math.max(...requests.map((r) => r.nTokens))) batchedRuns++;
    if (together.inPlace) inPlaceRuns++;
    for (const [i, request] of requests.entries()) {
      const [alone] = (await solo.run([request])).results;
      const joint = together.results[i];
      assert.ok(alone.ok, `session ${request.sessionId} alone: ${!alone.ok && alone.message}`);
      assert.ok(joint.ok, `session ${request.sessionId} batched: ${!joint.ok && joint.message}`);
      assert.equal(joint.rows, alone.rows);
      worst(joint.hidden, alone.hidden);
    }
    for (const { sessionId } of requests) {
      const a = batched.cacheOf(sessionId)!;
      const b = solo.cacheOf(sessionId)!;
      assert.equal(a.length, b.length);
      for (const [name, tensor] of b.tensors) {
        const other = a.tensors.get(name)!;
        assert.deepEqual(other.dims, tensor.dims, name);
        worst(tensorToFloat32(other), tensorToFloat32(tensor));
      }
    }
  }
  await session.release();
  return { maxAbsError, batchedRuns, inPlaceRuns };
}
