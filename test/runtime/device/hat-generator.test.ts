import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { CloudServer } from '../../../src/runtime/cloud/server.ts';
import { readManifest, manifestHash } from '../../../src/runtime/split-dir.ts';
import { openDeviceParts, type DeviceParts } from '../../../src/runtime/device/device-parts.ts';
import { CloudClient } from '../../../src/runtime/device/cloud-client.ts';
import { HatGenerator, type HatGenerateOptions } from '../../../src/runtime/device/hat-generator.ts';
import { Drafter, type DraftChain } from '../../../src/runtime/device/drafter.ts';
import {
  AutoDraftPolicy,
  FixedThresholdPolicy,
  type DraftPolicy,
  type RoundObservation,
} from '../../../src/runtime/speculative/draft-policy.ts';
import { OnnxCausalLm } from '../../../src/runtime/full-model.ts';
import { generateTokens } from '../../../src/runtime/generate.ts';
import { argmax, greedyChoice, topIndices } from '../../../src/runtime/sampling.ts';
import { SlmCausalLm } from '../../../src/runtime/device/slm.ts';
import { HEADER_BYTES } from '../../../src/runtime/protocol/frame.ts';
import { createSampler } from '../../../src/runtime/speculative/sampler.ts';
import { addIdentityAdapter, makeSmallSplit, serveSplit } from '../../helpers/runtime-fixtures.ts';
import { waitFor, withinDeadline } from '../../helpers/wait-for.ts';
import type { ForwardResult, Verifier } from '../../../src/runtime/device/verifier.ts';

const greedy = createSampler({ temperature: 0, topP: 1, seed: 0 });
const prompt = [1, 5, 9, 22, 13, 40, 2, 7, 8, 9, 31, 17];
const NEW = 24;
let server: CloudServer;
let port: number;
let split: string;
let reference: number[];

before(async () => {
  const made = await makeSmallSplit();
  split = made.split;
  addIdentityAdapter(split);
  ({ server, port } = await serveSplit(split, { maxSessions: 8, maxTokensPerFrame: 512, maxContext: 512 }));
  const full = await OnnxCausalLm.open(made.model);
  reference = (await generateTokens(full, prompt, { maxNewTokens: NEW, sampler: argmax })).ids;
  await full.release();
});
after(() => server.stop());

/**
 * What greedy speculation must do, restated on the small model alone (SlmCausalLm, stepped as the device steps
 * its parts): each round drafts while the top-1 probability is at least η, up to maxDraft; the verification keeps
 * the drafts the full model agrees with, plus its own next token. A predrafted branch (the likeliest `branches`
 * tokens after the last draft) is used when every draft was kept and the next token is one of them.
 */
async function expectedRounds(
  threshold: number,
  maxDraft: number,
  branches = 1,
): Promise<{ rounds: number; hits: number; rows: number }> {
  const slm = await SlmCausalLm.open(split);
  const lastRow = (out: { data: Float32Array; rows: number; cols: number }) =>
    out.data.subarray((out.rows - 1) * out.cols);
  await slm.step(prompt);
  let committed = 1; // the prefill's token
  let rounds = 0,
    hits = 0,
    rows = 0;
  while (committed < NEW) {
    slm.truncate(prompt.length + committed - 1);
    let logits = lastRow(await slm.step([reference[committed - 1]]));
    const drafts: number[] = [];
    for (;;) {
      const { token, probability } = greedyChoice(logits);
      // A round drafts at most what it can still commit (NEW − committed − 1 drafts + the bonus token).
      if (drafts.length === Math.min(maxDraft, NEW - committed - 1) || probability < threshold) break;
      drafts.push(token);
      logits = lastRow(await slm.step([token]));
    }
    let accepted = 0;
    while (accepted < drafts.length && drafts[accepted] === reference[committed + accepted]) accepted++;
    const next = reference[committed + accepted];
    if (accepted === drafts.length && next !== undefined && topIndices(logits, branches).includes(next)) hits++;
    committed += accepted + 1;
    rows += 1 + drafts.length;
    rounds++;
  }
  await slm.release();
  return { rounds, hits, rows };
}

/** Rows the cloud verified, from the bytes sent: each frame is a header plus rows of fp32 hidden states. */
function verifiedRows(out: { metrics: { bytesUp: number; rounds: number; chunkSizes: number[] } }): number {
  const { bytesUp, rounds, chunkSizes } = out.metrics;
  const rowBytes = 4 * readManifest(split).hidden.size;
  return (bytesUp - (chunkSizes.length + rounds) * HEADER_BYTES) / rowBytes - prompt.length;
}

/** A drafter that counts the chains it starts and remembers the chain it last drafted on. */
class CountingDrafter extends Drafter {
  starts = 0;
  last?: DraftChain;
  override async start(pending: number): Promise<DraftChain> {
    this.starts++;
    return (this.last = await super.start(pending));
  }
  override async extend(chain: DraftChain, maxDrafts?: number): Promise<boolean> {
    this.last = chain;
    return super.extend(chain, maxDrafts);
  }
}

/**
 * `verifier`, with each verification's result held back until the predrafter has started a branch on every
 * candidate of the round (the first `branches` of the chain's nextCandidates). The predrafter stops starting
 * branches once the result is in, so without this how many it starts depends on how fast the cloud answers.
 */
function holdUntilBranched(verifier: Verifier, drafter: CountingDrafter, branches: number): Verifier {
  const forward: Verifier['forward'] = async (hidden, nTokens, pastLength, options) => {
    const expected = options.allPositions ? (drafter.last?.nextCandidates?.slice(0, branches).length ?? 0) : 0;
    const from = drafter.starts;
    const result = await verifier.forward(hidden, nTokens, pastLength, options);
    await waitFor(() => drafter.starts - from >= expected, { what: `the predrafter to start ${expected} branches` });
    return result;
  };
  return new Proxy(verifier, {
    get: (target, key) => {
      if (key === 'forward') return forward;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** One generation by `parts` on a new session of the cloud at `cloudPort` (greedy, NEW tokens, no chunking). */
async function generateOn(
  parts: DeviceParts,
  cloudPort: number,
  options: Partial<HatGenerateOptions>,
  policy: DraftPolicy = new FixedThresholdPolicy(0, 4),
  /** Every predrafted round starts all its branches (holdUntilBranched). */
  allBranches = false,
) {
  const client = await CloudClient.connect({
    url: `ws://127.0.0.1:${cloudPort}`,
    manifestHash: manifestHash(parts.manifest),
    hiddenSize: parts.manifest.hidden.size,
    wire: 'fp32',
  });
  const drafter = new CountingDrafter(parts, greedy, policy);
  const verifier = allBranches ? holdUntilBranched(client, drafter, options.parallelBranches ?? 1) : client;
  const generator = new HatGenerator(parts, verifier, greedy, drafter);
  try {
    return await generator.generate(prompt, {
      maxNewTokens: NEW,
      speculative: true,
      parallelDrafting: false,
      chunk: 'off',
      ...options,
    });
  } finally {
    client.close();
  }
}

/** generateOn with device parts of its own, against the shared server. */
async function runHat(
  options: Partial<HatGenerateOptions>,
  policy: DraftPolicy = new FixedThresholdPolicy(0, 4),
  withAdapter = options.speculative !== false,
  allBranches = false,
) {
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter });
  return generateOn(parts, port, options, policy, allBranches);
}

test('U-shape (no drafts) over the real server equals the full model token for token', async () => {
  const out = await runHat({ speculative: false });
  assert.deepEqual(out.ids, reference);
  assert.equal(out.metrics.rounds, NEW - 1);
});

test(
  'an adapter that is loaded but not drafted with leaves U-shape output intact ' + '(it used to crash on truncate)',
  async () => {
    const out = await runHat({ speculative: false }, undefined, true);
    assert.deepEqual(out.ids, reference);
  },
);

test('speculative rounds with forced drafts and rollbacks still equal the full model', async () => {
  const out = await runHat({});
  assert.deepEqual(out.ids, reference);
  const expected = await expectedRounds(0, 4);
  assert.ok(expected.rounds < NEW - 1, 'some round keeps drafts');
  assert.equal(out.metrics.rounds, expected.rounds);
  // Every round verifies the pending token and 4 drafts, fewer in the last rounds: no more than they can commit.
  assert.equal(verifiedRows(out), expected.rows);
  assert.ok(expected.rows < 5 * out.metrics.rounds);
});

test('parallel drafting keeps greedy output identical and confirms branches', async () => {
  // At η = 0.9 drafts are often all kept, so branches get confirmed (at η = 0 none ever is on this model).
  const out = await runHat({ parallelDrafting: true, predraftAlways: true }, new FixedThresholdPolicy(0.9, 2));
  assert.deepEqual(out.ids, reference);
  const expected = await expectedRounds(0.9, 2);
  assert.ok(expected.hits > 0);
  assert.deepEqual(
    [out.metrics.rounds, out.metrics.parallelDrafting.branches, out.metrics.parallelDrafting.hits],
    [expected.rounds, expected.rounds, expected.hits],
  );
});

test('parallel drafting is skipped on rounds where a branch could hardly be used', async () => {
  // The random model's drafts are rarely both kept, and the device soon measures it: few rounds predraft.
  const gated = await runHat({ parallelDrafting: true }, new FixedThresholdPolicy(0, 2));
  const always = await runHat({ parallelDrafting: true, predraftAlways: true }, new FixedThresholdPolicy(0, 2));
  assert.deepEqual(gated.ids, reference);
  assert.ok(
    gated.metrics.parallelDrafting.branches <= always.metrics.parallelDrafting.branches / 3,
    `${gated.metrics.parallelDrafting.branches} of ${always.metrics.parallelDrafting.branches} rounds`,
  );
  // Drafts kept only at ≥ 0.9 are likely kept by the verification too, so branching pays (while the measured
  // candidate hit rate allows: it adapts).
  const confident = await runHat({ parallelDrafting: true }, new FixedThresholdPolicy(0.9, 2));
  assert.deepEqual(confident.ids, reference);
  assert.ok(
    confident.metrics.parallelDrafting.branches >= confident.metrics.rounds / 2,
    `${confident.metrics.parallelDrafting.branches} of ${confident.metrics.rounds} rounds`,
  );
});

test(
  'parallel drafting on the top-3 candidates keeps greedy output identical ' + 'and confirms at least as often',
  async () => {
    const options = { parallelDrafting: true, predraftAlways: true };
    // Each round starts all its branches before its verification is taken in: the hits do not depend on a race.
    const one = await runHat({ ...options, parallelBranches: 1 }, new FixedThresholdPolicy(0.9, 2), true, true);
    const three = await runHat({ ...options, parallelBranches: 3 }, new FixedThresholdPolicy(0.9, 2), true, true);
    assert.deepEqual(three.ids, reference);
    const [expectedOne, expectedThree] = [await expectedRounds(0.9, 2, 1), await expectedRounds(0.9, 2, 3)];
    assert.ok(expectedThree.hits > expectedOne.hits, 'the 2nd and 3rd candidates are confirmed on some rounds');
    assert.equal(one.metrics.parallelDrafting.hits, expectedOne.hits);
    assert.equal(three.metrics.parallelDrafting.hits, expectedThree.hits);
  },
);

test('chunked prefill (fixed and auto) gives the same first token and continuation', async () => {
  const expectedChunks = { 3: [3, 3, 3, 3], 5: [5, 5, 2] };
  for (const chunk of [3, 5, 'auto'] as const) {
    const out = await runHat({ chunk, speculative: false });
    assert.deepEqual(out.ids, reference, `chunk ${chunk}`);
    if (chunk === 'auto')
      assert.equal(
        out.metrics.chunkSizes.reduce((a, b) => a + b, 0),
        prompt.length,
      );
    else assert.deepEqual(out.metrics.chunkSizes, expectedChunks[chunk]);
  }
});

test('the auto draft policy keeps greedy output identical', async () => {
  const out = await runHat({ parallelDrafting: true }, new AutoDraftPolicy(0.3, 6, 1));
  assert.deepEqual(out.ids, reference);
});

test('a round that keeps every draft tells the policy whether the draft it stopped at was right', async () => {
  const observed: RoundObservation[] = [];
  class Recording extends FixedThresholdPolicy {
    override observe(round: RoundObservation): void {
      observed.push(round);
      super.observe(round);
    }
  }
  const out = await runHat({}, new Recording(0.9, 2));
  assert.deepEqual(out.ids, reference);
  const expected = await expectedRounds(0.9, 2);
  const declined = observed.filter((o) => o.declined);
  assert.ok(declined.every((o) => o.accepted === o.confidences.length));
  // The declined draft is the small model's top-1 after the last draft: right exactly when a branch on it would hit.
  assert.equal(declined.filter((o) => o.declined!.acceptance === 1).length, expected.hits);
  assert.ok(expected.hits > 0 && declined.length > expected.hits, 'both outcomes occur');
});

test('an aborted signal ends a generation that waits on its prompt at once, with what it committed', async () => {
  const manifest = readManifest(split);
  const parts = await openDeviceParts(split, manifest, { withAdapter: true });
  // A cloud that takes the frames and never answers: the generation waits on the network until it is aborted.
  let sent: (() => void) | undefined;
  const silent: Verifier = {
    wire: 'fp32',
    maxTokensPerFrame: 0,
    initialLatency: { baseMs: 1, perTokenMs: 0.1 },
    bytesUp: 0,
    bytesDown: 0,
    forward: () => {
      sent?.();
      return new Promise<ForwardResult>(() => {});
    },
    close: () => {},
  };
  const generator = new HatGenerator(parts, silent, greedy, new Drafter(parts, greedy, new FixedThresholdPolicy(0, 4)));
  for (const chunk of [4, 'off'] as const) {
    const abort = new AbortController();
    // Aborted once the first frame went up (on the next turn of the event loop: the generation waits on it by then).
    let frames = 0;
    sent = () => {
      if (frames++ === 0) setImmediate(() => abort.abort());
    };
    const out = await withinDeadline(
      generator.generate(prompt, {
        maxNewTokens: NEW,
        speculative: true,
        parallelDrafting: false,
        chunk,
        signal: abort.signal,
      }),
      { what: `the aborted generation (chunk ${chunk})` },
    );
    assert.ok(frames > 0, 'a frame went up before the abort');
    assert.deepEqual(out.ids, []);
    assert.equal(out.error, undefined);
  }
});

test("no frame exceeds the cloud's --max-tokens-per-frame: prompt chunks of any --chunk, verifications", async () => {
  // 3 rows a frame: the 12-token prompt in any chunking, and rounds of 4 drafts + 1, used to be refused.
  const small = await serveSplit(split, { maxSessions: 8, maxTokensPerFrame: 3, maxContext: 512 });
  try {
    for (const chunk of ['auto', 'off', 8] as const) {
      const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
      const out = await generateOn(parts, small.port, { chunk });
      assert.equal(out.error, undefined, `chunk ${chunk}: ${out.error?.message}`);
      assert.deepEqual(out.ids, reference, `chunk ${chunk}`);
      assert.ok(Math.max(...out.metrics.chunkSizes) <= 3, `chunk ${chunk}: ${out.metrics.chunkSizes}`);
    }
  } finally {
    await small.server.stop();
  }
});

test('a generation on device parts used before starts from empty caches (it ran on what was left)', async () => {
  const parts = await openDeviceParts(split, readManifest(split), { withAdapter: true });
  // The first generation leaves its caches full; the next two run on the same parts, each with its cloud session.
  for (const chunk of ['auto', 'off', 8] as const)
    assert.deepEqual((await generateOn(parts, port, { chunk })).ids, reference, `chunk ${chunk}`);
});
