/**
 * HAT generation on the device, composed of small pieces: chunked prefill (PrefillPipeline), then rounds of
 * draft (Drafter) → upload the drafts' hidden states → the middle part verifies (a Verifier: the cloud, resumed
 * across lost links, or the small model as fallback) → output part → verifyRound → commit (TokenCommitter, as
 * `hat generate`) → roll the device caches back (DeviceCaches). While a verification is in flight the device
 * keeps drafting on its best guesses for the next token (Predrafter, HAT Fig. 5).
 */
import { GENERATION_CANCELLED, untilAborted } from './abortable.ts';
import { HatError } from '../../errors.ts';
import { isCloudFailure } from '../protocol/control.ts';
import type { StepOutput } from '../part-runner.ts';
import { choose, type Sampler } from '../speculative/sampler.ts';
import { verifyRound } from '../speculative/verify-round.ts';
import { TokenCommitter } from '../token-commit.ts';
import { DeviceCaches } from './device-caches.ts';
import type { DeviceParts } from './device-parts.ts';
import { capDrafts, type DraftChain, type Drafter } from './drafter.ts';
import { MetricsRecorder, type DeviceMetrics } from './generation-metrics.ts';
import { Predrafter, type Branch } from './predrafter.ts';
import { PrefillPipeline, type ChunkOption } from './prefill.ts';
import type { ChunkPlanner } from '../chunk-planner.ts';
import type { ForwardResult, Verifier } from './verifier.ts';

export type { DeviceMetrics } from './generation-metrics.ts';

export interface HatGenerateOptions {
  maxNewTokens: number;
  /** Generation stops after one of these (kept in the output): every EOS id the model names (prompt.ts). */
  stopTokenIds?: readonly number[];
  /** Draft with the small model (off = U-shape: one round trip per token). */
  speculative: boolean;
  parallelDrafting: boolean;
  /** Candidates for the next token that parallel drafting branches on (HAT's top-k; default 1). */
  parallelBranches?: number;
  /** Predraft on every round, not only when its expected saving exceeds its cost (Predrafter.worthIt). */
  predraftAlways?: boolean;
  chunk: ChunkOption;
  onTokens?: (ids: number[]) => void;
  /** Stops after the round in flight (a client that went away): what was committed is returned. */
  signal?: AbortSignal;
}

export interface HatGeneration {
  ids: number[];
  metrics: DeviceMetrics;
  /** Set when the cloud failed (after any reconnects) and generation stopped early; `ids` holds what was committed. */
  error?: HatError;
}

/** What one verification round produced. */
interface RoundResult {
  committed: number[];
  /** The chain to continue from: a confirmed parallel-drafting branch, or none (start from the next token). */
  chain?: DraftChain;
  /** The cloud's advice for the next round's rows (src/runtime/cloud/rows-advice.ts), if it gave one. */
  advisedRows?: number;
}

function concatRows(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let offset = 0;
  for (const r of rows) {
    out.set(r, offset);
    offset += r.length;
  }
  return out;
}

function rowsOf(output: StepOutput): Float32Array[] {
  return Array.from({ length: output.rows }, (_, i) => output.data.subarray(i * output.cols, (i + 1) * output.cols));
}

export class HatGenerator {
  private readonly prefill: PrefillPipeline;
  private readonly predrafter: Predrafter;

  constructor(
    private readonly parts: DeviceParts,
    private readonly verifier: Verifier,
    private readonly sampler: Sampler,
    private readonly drafter: Drafter,
    planner?: ChunkPlanner,
  ) {
    this.prefill = new PrefillPipeline(parts, verifier, planner);
    this.predrafter = new Predrafter(drafter);
  }

  async generate(prompt: readonly number[], options: HatGenerateOptions): Promise<HatGeneration> {
    if (prompt.length === 0)
      throw new HatError(
        'BAD_OPTION',
        'the prompt encodes to no tokens',
        'pass a non-empty prompt, or a tokenizer with a BOS token',
      );
    const recorder = new MetricsRecorder(this.verifier, this.drafter.policy);
    const committer = new TokenCommitter({
      maxNewTokens: options.maxNewTokens,
      stopTokenIds: options.stopTokenIds ?? [],
      onTokens: options.onTokens,
    });
    const drafting = options.speculative && this.parts.adapter !== undefined;
    // The adapter's cache advances only while drafting (a fallback verifier keeps a cache of its own).
    const caches = new DeviceCaches(this.parts, drafting);
    caches.clear();
    const finish = (error?: HatError): HatGeneration => {
      const metrics = recorder.finish(committer.ids.length);
      const status = this.verifier.resumeStatus;
      if (status) metrics.reconnects = status.reconnects;
      if (status?.fallback) {
        // The failed request sat at the pending token: committed tokens = its position − prompt + 1.
        const after = Math.max(0, status.fallback.position - prompt.length + 1);
        metrics.fallback =
          `the cloud failed after ${after} tokens (${status.fallback.reason}); ` +
          `continued with the small model alone`;
      }
      return { ids: committer.ids, metrics, error };
    };
    try {
      const prefilled = await this.prefill.run(prompt, options.chunk, caches, recorder, options.signal);
      let pending = choose(this.sampler, prefilled.logits).token;
      recorder.firstToken();
      committer.commit([pending]);
      let chain: DraftChain | undefined;
      let advisedRows = prefilled.advisedRows;
      while (!committer.done && !options.signal?.aborted) {
        const base = prompt.length + committer.ids.length - 1; // the pending token's position = the middle's length
        // A round commits at most its drafts + 1 tokens: drafting past what is left only grows the cache. And its
        // verification frame carries drafts + 1 rows, no more than the cloud takes in one frame.
        const frameRoom = this.verifier.maxTokensPerFrame > 0 ? this.verifier.maxTokensPerFrame - 1 : Infinity;
        const left = Math.min(options.maxNewTokens - committer.ids.length - 1, frameRoom);
        // A busy cloud advises fewer rows: there every draft costs other sessions compute (rows-advice.ts).
        const advised = advisedRows !== undefined && advisedRows - 1 < Math.min(left, this.drafter.policy.maxDraft);
        const maxDrafts = advised ? advisedRows! - 1 : left;
        const round = await this.round(base, pending, chain, { maxDrafts, advised }, caches, options, recorder);
        committer.commit(round.committed);
        pending = round.committed[round.committed.length - 1];
        chain = round.chain;
        advisedRows = round.advisedRows;
      }
      return finish();
    } catch (error) {
      if (error === GENERATION_CANCELLED) return finish();
      if (!isCloudFailure(error)) throw error;
      return finish(error);
    }
  }

  private modelMs(): number {
    const { input, output, adapter, draftOutput } = this.parts;
    return input.runMs + output.runMs + (adapter?.runMs ?? 0) + (draftOutput === output ? 0 : draftOutput.runMs);
  }

  /** Draft, verify, accept, roll back: one round from the pending token at position `base`. */
  private async round(
    base: number,
    pending: number,
    continued: DraftChain | undefined,
    limit: { maxDrafts: number; advised: boolean },
    caches: DeviceCaches,
    options: HatGenerateOptions,
    recorder: MetricsRecorder,
  ): Promise<RoundResult> {
    const roundStart = performance.now();
    const modelAtStart = this.modelMs();
    const { maxDrafts } = limit;
    // A branch confirmed last round continues with its caches; a new chain drafts on the verified output cache.
    if (!continued) caches.startDrafting();
    const chain = continued ?? (await this.drafter.start(pending));
    if (options.speculative)
      while (await this.drafter.extend(chain, maxDrafts)) {
        /* grow the chain */
      }
    capDrafts(chain, Math.max(0, maxDrafts));
    const rows = chain.hidden.length;
    const candidates = chain.nextCandidates?.slice(0, options.parallelBranches ?? 1);
    const verification = this.verifier.forward(concatRows(chain.hidden), rows, base, { allPositions: true });
    let branches: Branch[] = [];
    if (options.parallelDrafting && candidates && (options.predraftAlways || this.predrafter.worthIt(chain))) {
      branches = await this.predrafter.run(candidates, verification, caches);
    }
    const waitStart = performance.now();
    const result: ForwardResult = await untilAborted(verification, options.signal);
    const waitedMs = performance.now() - waitStart;

    const verified = await this.parts.output.step({ hidden: result.hidden }, rows);
    const outcome = verifyRound(chain, rowsOf(verified), this.sampler);
    const keptAll = outcome.accepted === chain.drafts.length;
    const draftSteps = chain.stepMs.slice(1);
    this.drafter.policy.observe({
      confidences: chain.confidences,
      accepted: outcome.accepted,
      verifyMs: result.roundTripMs,
      draftStepMs: draftSteps.length ? draftSteps.reduce((a, b) => a + b, 0) / draftSteps.length : undefined,
      declined: outcome.declined,
    });
    if (candidates && keptAll) this.predrafter.observe(candidates, outcome.next);
    const keep = base + 1 + outcome.accepted;
    caches.rollbackOutput(keep);
    // A confirmed branch's caches hold it on top of the accepted chain: it is the next round's chain.
    const confirmed = keptAll ? branches.find((b) => b.token === outcome.next) : undefined;
    if (confirmed) caches.restore(confirmed.state);
    else caches.rollbackDrafting(keep);
    const ownMs = performance.now() - roundStart - waitedMs - (this.modelMs() - modelAtStart);
    recorder.round(result, outcome.committed.length, ownMs, {
      predrafted: branches.length > 0,
      branchUsed: confirmed !== undefined,
      advised: limit.advised && options.speculative,
    });
    return { committed: outcome.committed, chain: confirmed?.chain, advisedRows: result.advisedRows };
  }
}
