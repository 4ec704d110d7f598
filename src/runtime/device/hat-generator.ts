/**
 * HAT generation on the device: chunked prefill through input part → cloud → output part, then rounds of
 * draft → upload the drafts' hidden states → cloud verifies → output part accepts → both sides roll back.
 * While a verification is in flight the device keeps drafting on its best guess for the next token
 * (parallel drafting, HAT Fig. 5) and keeps that branch when the verification confirms the guess.
 */
import { HatError, isHatError } from '../../errors.ts';
import { acceptGreedy, acceptSampled } from '../speculative/acceptance.ts';
import { argmax } from '../sampling.ts';
import { choose, type Sampler } from '../speculative/sampler.ts';
import { ChunkPlanner } from '../chunk-planner.ts';
import { lastRow, type KvState, type StepOutput } from '../part-runner.ts';
import type { CloudClient, ForwardResult } from './cloud-client.ts';
import type { DeviceParts } from './device-parts.ts';
import { Drafter, type DraftChain } from './drafter.ts';
import { SlmCausalLm } from './slm.ts';
import { summarize, type Summary } from './metrics.ts';
import { wireBytesPerRow } from '../protocol/hidden-codec.ts';
import { Ema } from '../ema.ts';

/** Probe chunks sent but unanswered before `--chunk auto` waits for a first measurement. */
const MAX_CHUNKS_IN_FLIGHT = 3;

export interface HatGenerateOptions {
  maxNewTokens: number;
  eosTokenId?: number;
  /** Draft with the small model (off = U-shape: one round trip per token). */
  speculative: boolean;
  parallelDrafting: boolean;
  /** Candidates for the next token that parallel drafting branches on (HAT's top-k; default 1). */
  parallelBranches?: number;
  /** Predraft on every round, not only when its expected saving exceeds its cost (worthPredrafting). */
  predraftAlways?: boolean;
  chunk: 'off' | 'auto' | number;
  /** Continue with the small model alone if the cloud fails. */
  fallbackLocal: boolean;
  onTokens?: (ids: number[]) => void;
}

export interface DeviceMetrics {
  ttftMs: number;
  /** Per committed token: its round's time / tokens the round committed. */
  tbtMs: Summary;
  rounds: number;
  tokensPerRound: number;
  bytesUp: number;
  bytesDown: number;
  chunkSizes: number[];
  /** Per prompt chunk: device input-part time, bytes sent, the cloud's queue/compute time and the round trip. */
  prefillChunks: Array<{ tokens: number; deviceMs: number; bytesUp: number; queueMs: number; computeMs: number; roundTripMs: number }>;
  draft: { mode: string; threshold: number; maxDraft: number };
  parallelDrafting: { branches: number; hits: number };
  cloudComputeMs: number;
  cloudQueueMs: number;
  /** Mean per verification round of the device's own time outside model runs and outside waiting for the cloud. */
  deviceOverheadMsPerRound: number;
  fallback?: string;
}

export interface HatGeneration {
  ids: number[];
  metrics: DeviceMetrics;
  /** Set when the cloud failed and generation stopped early; `ids` holds what was committed. */
  error?: HatError;
}

interface BranchState {
  input: KvState;
  adapter?: KvState;
}

interface Branch {
  token: number;
  chain: DraftChain;
  state: BranchState;
}

function concatRows(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let offset = 0;
  for (const r of rows) { out.set(r, offset); offset += r.length; }
  return out;
}

function row(output: StepOutput, i: number): Float32Array {
  return output.data.subarray(i * output.cols, (i + 1) * output.cols);
}

export class HatGenerator {
  /**
   * How often, when a round kept every draft, the verification's next token was among the parallel-drafting
   * candidates (measured on every such round; prior 0.5).
   */
  private readonly candidateHit = new Ema(0.8, 0.5);
  private readonly parts: DeviceParts;
  private readonly client: CloudClient;
  private readonly sampler: Sampler;
  private readonly drafter: Drafter;
  private readonly planner: ChunkPlanner;

  constructor(parts: DeviceParts, client: CloudClient, sampler: Sampler, drafter: Drafter) {
    this.parts = parts;
    this.client = client;
    this.sampler = sampler;
    this.drafter = drafter;
    const hidden = parts.manifest.hidden.size;
    this.planner = new ChunkPlanner({
      bytesPerToken: wireBytesPerRow(client.options.wire, hidden),
      maxChunk: Math.max(16, client.maxTokensPerFrame || 4096),
    });
    this.planner.seed(client.initialLatency);
  }

  /** The adapter's cache is kept in step with the input part when drafting, or for a local fallback. */
  private usesAdapter(options: HatGenerateOptions): boolean {
    return this.parts.adapter !== undefined && (options.speculative || options.fallbackLocal);
  }

  private get outputHasCache(): boolean {
    return this.parts.manifest.kv.output.length > 0;
  }

  private chunkSize(option: HatGenerateOptions['chunk'], remaining: number): number {
    if (option === 'off') return remaining;
    if (option === 'auto') return this.planner.next(remaining);
    return Math.min(option, remaining);
  }

  /** Runs the prompt through the split and returns the output part's logits at its last position. */
  private async prefill(prompt: readonly number[], options: HatGenerateOptions, metrics: DeviceMetrics): Promise<Float32Array> {
    const inFlight: Array<Promise<ForwardResult>> = [];
    let answered = 0;
    let offset = 0;
    while (offset < prompt.length) {
      // Before the link is measured, sizing waits for a result once a few probes are in flight: the link or the
      // cloud is then the bottleneck, so waiting costs little and the next sizes are informed.
      const unanswered = inFlight.length - answered;
      if (options.chunk === 'auto' && !this.planner.measured && unanswered >= MAX_CHUNKS_IN_FLIGHT) await inFlight[answered];
      const size = this.chunkSize(options.chunk, prompt.length - offset);
      metrics.chunkSizes.push(size);
      const deviceStart = performance.now();
      const h = await this.parts.input.step({ ids: prompt.slice(offset, offset + size) }, size);
      const deviceMs = performance.now() - deviceStart;
      const sent = this.client.forward(h.data, size, offset, { allPositions: this.outputHasCache, prefill: true });
      this.planner.observeDevice(size, deviceMs);
      const sentAt = performance.now();
      inFlight.push(sent.then((r) => {
        metrics.prefillChunks.push({ tokens: size, deviceMs, bytesUp: r.bytesUp, queueMs: r.queueMs, computeMs: r.computeMs, roundTripMs: r.roundTripMs });
        this.planner.observeResult({ bytesUp: r.bytesUp, sentAt, resultAt: sentAt + r.roundTripMs, queueMs: r.queueMs, computeMs: r.computeMs, latency: r.latency });
        metrics.cloudComputeMs += r.computeMs;
        metrics.cloudQueueMs += r.queueMs;
        answered++;
        return r;
      }));
      // The adapter's own cache covers the prompt too; this device work overlaps the upload.
      if (this.usesAdapter(options)) await this.parts.adapter!.step({ hidden: h.data }, size);
      offset += size;
    }
    let logits: StepOutput | undefined;
    for (const pending of inFlight) {
      const result = await pending;
      if (this.outputHasCache || pending === inFlight[inFlight.length - 1]) {
        logits = await this.parts.output.step({ hidden: result.hidden }, result.rows);
      }
    }
    return lastRow(logits!);
  }

  async generate(prompt: readonly number[], options: HatGenerateOptions): Promise<HatGeneration> {
    if (prompt.length === 0) throw new HatError('BAD_OPTION', 'the prompt encodes to no tokens', 'pass a non-empty prompt, or a tokenizer with a BOS token');
    const metrics: DeviceMetrics = {
      ttftMs: 0, tbtMs: summarize([]), rounds: 0, tokensPerRound: 0, bytesUp: 0, bytesDown: 0, chunkSizes: [], prefillChunks: [],
      draft: this.drafter.policy.describe(), parallelDrafting: { branches: 0, hits: 0 }, cloudComputeMs: 0, cloudQueueMs: 0, deviceOverheadMsPerRound: 0,
    };
    const started = performance.now();
    const bytesAtStart = { up: this.client.bytesUp, down: this.client.bytesDown };
    const generated: number[] = [];
    const perToken: number[] = [];
    let overheadMs = 0;
    let done = false;
    const commit = (ids: number[]) => {
      const accepted: number[] = [];
      for (const id of ids) {
        if (done) break;
        accepted.push(id);
        // Like `hat generate`, the stop token is part of the output and ends it.
        if (id === options.eosTokenId) { done = true; break; }
        if (generated.length + accepted.length >= options.maxNewTokens) done = true;
      }
      generated.push(...accepted);
      if (accepted.length) options.onTokens?.(accepted);
      return accepted.length;
    };
    const finish = (error?: HatError): HatGeneration => {
      metrics.tbtMs = summarize(perToken);
      metrics.tokensPerRound = metrics.rounds ? Number(((generated.length - 1) / metrics.rounds).toFixed(3)) : 0;
      metrics.bytesUp = this.client.bytesUp - bytesAtStart.up;
      metrics.bytesDown = this.client.bytesDown - bytesAtStart.down;
      metrics.draft = this.drafter.policy.describe();
      metrics.deviceOverheadMsPerRound = metrics.rounds ? Number((overheadMs / metrics.rounds).toFixed(4)) : 0;
      return { ids: generated, metrics, error };
    };

    let pending: number;
    try {
      const logits = await this.prefill(prompt, options, metrics);
      pending = choose(this.sampler, logits).token;
    } catch (error) {
      if (!isHatError(error) || error.code !== 'NETWORK') throw error;
      return finish(error);
    }
    metrics.ttftMs = performance.now() - started;
    commit([pending]);

    let chain: DraftChain | undefined;
    let lastCommitAt = performance.now();
    const modelMs = () => this.parts.input.runMs + this.parts.output.runMs + (this.parts.adapter?.runMs ?? 0)
      + (this.parts.draftOutput === this.parts.output ? 0 : this.parts.draftOutput.runMs);
    while (!done) {
      const roundStart = performance.now();
      const modelAtStart = modelMs();
      let waitedMs = 0;
      const base = prompt.length + generated.length - 1; // position of the pending token = the cloud's length
      if (!chain) {
        chain = await this.drafter.start(pending);
        // Without drafting nothing else feeds the adapter the pending token's state; a fallback needs it.
        if (!options.speculative && this.usesAdapter(options)) await this.parts.adapter!.step({ hidden: chain.hidden[0] }, 1);
      }
      if (options.speculative) while (await this.drafter.extend(chain)) { /* grow the chain */ }
      const rows = chain.hidden.length;
      const candidates = chain.nextCandidates?.slice(0, options.parallelBranches ?? 1);
      let result: ForwardResult;
      let branches: Branch[] = [];
      try {
        const verification = this.client.forward(concatRows(chain.hidden), rows, base, { allPositions: true });
        if (options.parallelDrafting && candidates && (options.predraftAlways || this.worthPredrafting(chain))) {
          branches = await this.predraft(candidates, verification);
        }
        const waitStart = performance.now();
        result = await verification;
        waitedMs = performance.now() - waitStart;
      } catch (error) {
        if (!isHatError(error) || error.code !== 'NETWORK') throw error;
        if (!options.fallbackLocal || !this.usesAdapter(options)) return finish(error);
        metrics.fallback = `the cloud failed after ${generated.length} tokens (${error.message}); continued with the small model alone`;
        await this.continueLocally(base, pending, commit, () => done);
        return finish();
      }
      metrics.rounds++;
      metrics.cloudComputeMs += result.computeMs;
      metrics.cloudQueueMs += result.queueMs;
      const verified = await this.parts.output.step({ hidden: result.hidden }, rows);
      const outcome = this.sampler.greedy
        ? acceptGreedy(chain.drafts, Array.from({ length: rows }, (_, i) => argmax(row(verified, i))))
        : acceptSampled(chain.drafts, chain.draftProbs, Array.from({ length: rows }, (_, i) => this.sampler.distribution(row(verified, i))), this.sampler.random);
      const draftSteps = chain.stepMs.slice(1);
      this.drafter.policy.observe({
        confidences: chain.confidences, accepted: outcome.accepted, verifyMs: result.roundTripMs,
        draftStepMs: draftSteps.length ? draftSteps.reduce((a, b) => a + b, 0) / draftSteps.length : undefined,
      });
      if (candidates && outcome.accepted === chain.drafts.length) this.candidateHit.update(candidates.includes(outcome.next) ? 1 : 0);
      const keep = base + 1 + outcome.accepted;
      if (this.outputHasCache) this.parts.output.truncate(keep);
      const committed = [...chain.drafts.slice(0, outcome.accepted), outcome.next];
      const confirmed = outcome.accepted === chain.drafts.length ? branches.find((b) => b.token === outcome.next) : undefined;
      if (confirmed) {
        // That branch's caches hold it on top of the accepted chain: it is the next round's chain.
        metrics.parallelDrafting.hits++;
        this.restoreCache(confirmed.state);
        chain = confirmed.chain;
      } else {
        // Every branch shares the chain's prefix up to `keep`, so truncating whichever state is loaded is right;
        // the branches' snapshots end with this round, so it is rolled back in place rather than copied.
        this.parts.input.dropSnapshots();
        this.parts.input.truncate(keep);
        if (this.usesAdapter(options)) {
          this.parts.adapter!.dropSnapshots();
          this.parts.adapter!.truncate(keep);
        }
        chain = undefined;
      }
      if (branches.length) metrics.parallelDrafting.branches++;
      commit(committed);
      pending = outcome.next;
      const now = performance.now();
      for (let i = 0; i < committed.length; i++) perToken.push((now - lastCommitAt) / committed.length);
      lastCommitAt = now;
      overheadMs += now - roundStart - waitedMs - (modelMs() - modelAtStart);
    }
    return finish();
  }

  /**
   * A predrafted branch is used only when the verification keeps every draft and picks one of the candidates; it
   * then saves about as many draft steps as this chain took. It always costs about half a draft step, the one in
   * progress when the result arrives. So predraft only when the expected saving is larger.
   */
  private worthPredrafting(chain: DraftChain): boolean {
    return chain.survival * this.candidateHit.valueOr(0.5) * chain.stepMs.length > 0.5;
  }

  private cacheState(): BranchState {
    return { input: this.parts.input.snapshot(), adapter: this.parts.adapter?.snapshot() };
  }

  private restoreCache(state: BranchState): void {
    this.parts.input.restore(state.input);
    if (state.adapter) this.parts.adapter!.restore(state.adapter);
  }

  /**
   * While the verification is in flight, drafts ahead from each candidate for the token after the last draft
   * (HAT Fig. 5), one step per branch in turn, each branch on its own snapshot of the input part's and adapter's
   * caches. Stops when the result arrives; a branch the policy has not finished is resumed next round if kept.
   */
  private async predraft(candidates: readonly number[], verification: Promise<unknown>): Promise<Branch[]> {
    let arrived = false;
    verification.then(() => { arrived = true; }, () => { arrived = true; });
    const root = this.cacheState();
    const branches: Branch[] = [];
    for (const token of candidates) {
      if (arrived && branches.length > 0) break;
      this.restoreCache(root);
      const chain = await this.drafter.start(token);
      branches.push({ token, chain, state: this.cacheState() });
    }
    while (!arrived && branches.some((b) => !b.chain.finished)) {
      for (const branch of branches) {
        if (arrived) break;
        if (branch.chain.finished) continue;
        this.restoreCache(branch.state);
        await this.drafter.extend(branch.chain);
        branch.state = this.cacheState();
      }
    }
    return branches;
  }

  /** After a cloud failure: generate with the small model alone (input part → adapter → output part). */
  private async continueLocally(base: number, pending: number, commit: (ids: number[]) => number, isDone: () => boolean): Promise<void> {
    const slm = new SlmCausalLm(this.parts, 0);
    slm.truncate(Math.min(base, slm.length));
    let token = pending;
    while (!isDone()) {
      token = choose(this.sampler, lastRow(await slm.step([token]))).token;
      commit([token]);
    }
  }
}
