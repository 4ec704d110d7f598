/**
 * The device as a long-lived object for apps: the input/output parts, the adapter and the tokenizer are opened
 * once; every request then gets fresh KV caches over the same onnxruntime sessions and its own cloud session
 * (opened for the request, closed after it: the cloud frees its cache), so requests never share state.
 * Requests run one at a time in arrival order (RequestQueue); text streams as verification rounds commit it.
 */
import { basename, resolve } from 'node:path';
import { randomInt } from 'node:crypto';
import { HatError } from '../errors.ts';
import type { SplitManifest } from '../split/manifest.ts';
import type { LinkSpec } from '../runtime/link.ts';
import { parseLinkSpec } from '../runtime/link.ts';
import type { WireDTypeName } from '../runtime/protocol/frame.ts';
import { PartRunner } from '../runtime/part-runner.ts';
import { promptIds as resolvePromptIds, stopTokenIds } from '../runtime/prompt.ts';
import { configContext } from '../runtime/model-config.ts';
import { readManifest, splitSpecialIds, splitTokenizer } from '../runtime/split-dir.ts';
import { continuationText, textStreamer, type TextTokenizer } from '../runtime/tokenizer.ts';
import { budgetWithinCloudContext, type TokenBudget } from '../runtime/device/cloud-context.ts';
import type { ChunkPlanner } from '../runtime/chunk-planner.ts';
import { connectDeviceGenerator } from '../runtime/device/device-generator.ts';
import { openDeviceParts, type DeviceParts } from '../runtime/device/device-parts.ts';
import type { DeviceMetrics, HatGeneration } from '../runtime/device/hat-generator.ts';
import { devicePlanner } from '../runtime/device/prefill.ts';
import { loadChatTemplate, type ChatMessage, type ChatTemplate } from './chat-template.ts';
import { CANCELLED_WHILE_QUEUED, RequestQueue } from './request-queue.ts';
import { GENERATION_CANCELLED, untilAborted } from '../runtime/device/abortable.ts';
import { StopText, tokensUntilStop } from './stop-text.ts';

export type { ChatMessage } from './chat-template.ts';
export type { DeviceMetrics } from '../runtime/device/hat-generator.ts';

export interface HatDeviceOptions {
  /** serve-cloud's address: ws://HOST:PORT (or wss:// behind a TLS proxy). */
  cloud: string;
  /** The server's shared secret (serve-cloud --token). */
  token?: string;
  /** Hidden-state dtype on the wire (default fp16; fp32 is bit-faithful). */
  wire?: WireDTypeName;
  /** An EMULATED link: a profile name (wifi, 4g, lan, none), a spec string or a LinkSpec. */
  link?: string | LinkSpec;
  /** onnxruntime intra-op threads. */
  threads?: number;
  /** Draft with the adapter (default true; false: one cloud round trip per token). */
  speculative?: boolean;
  draftThreshold?: 'auto' | number;
  maxDraft?: number;
  parallelDrafting?: boolean;
  parallelBranches?: number;
  chunk?: 'auto' | 'off' | number;
  /** New cloud sessions to try when the connection drops mid-generation (default 0). */
  reconnects?: number;
  /** When the cloud is lost for good, finish with the small model alone (needs the adapter). */
  fallbackLocal?: boolean;
  /** Requests that may wait while one generates (default 16); more are refused with BUSY. */
  maxQueue?: number;
  /** The model's context in tokens; default: config.json's max_position_embeddings (or similar) in the bundle. */
  contextLength?: number;
  /** The name requests use for this model (default: the bundle folder's name). */
  modelId?: string;
  /** Called with every frame the device sends to the cloud (privacy checks). */
  recordUplink?: (bytes: Uint8Array) => void;
}

/** Text (tokenized with the tokenizer's special tokens, as `hat generate --prompt`), token ids, or a chat. */
export type Prompt = string | { ids: readonly number[] } | { messages: readonly ChatMessage[] };

export interface GenerateOptions {
  /** Most tokens to generate (default: the rest of the context, or 256 when the context is unknown). */
  maxTokens?: number;
  /** 0 = greedy (default 0). */
  temperature?: number;
  topP?: number;
  /** Sampling seed (default: random). */
  seed?: number;
  /** Stop before the first occurrence of any of these strings (not returned). */
  stop?: readonly string[];
  /** Aborting ends the generation after the current round and frees its cloud session. */
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GenerationResult {
  text: string;
  /** The generated token ids that `text` came from (a stop token included, tokens after a stop string not). */
  ids: number[];
  promptTokens: number;
  completionTokens: number;
  /** stop: the model's stop token or a stop string; length: maxTokens; cancelled: the signal aborted. */
  finishReason: FinishReason;
  /** Time spent waiting for earlier requests, ms. */
  queuedMs: number;
  /** Time to open this request's cloud session, ms (0 when none was opened). */
  connectMs: number;
  /** HAT's own figures for this generation (TTFT, TBT, tokens per round, bytes up and down, …). */
  metrics?: DeviceMetrics;
}

/** A request checked against the model before it queues. */
export interface PreparedRequest {
  promptIds: number[];
  maxTokens: number;
  /** Whether maxTokens was asked for; if not, it is the model's room, which a smaller cloud context lowers. */
  budgetGiven: boolean;
  stop: string[];
}

const DEFAULT_MAX_TOKENS = 256;
/** A request whose client went away before any token. */
function cancelledResult(promptTokens: number, queuedMs: number): GenerationResult {
  return { text: '', ids: [], promptTokens, completionTokens: 0, finishReason: 'cancelled', queuedMs, connectMs: 0 };
}

/**
 * New runners (caches of their own) over the already-loaded onnxruntime sessions: no request's caches are another's,
 * even while a cancelled one still finishes a part run.
 */
function freshParts(base: DeviceParts): DeviceParts {
  const fresh = (runner: PartRunner) => PartRunner.fromSession(runner.session, runner.io);
  const output = fresh(base.output);
  return {
    manifest: base.manifest,
    input: fresh(base.input),
    output,
    draftOutput: base.draftOutput === base.output ? output : fresh(base.draftOutput),
    adapter: base.adapter && fresh(base.adapter),
  };
}

export class HatDevice {
  readonly bundle: string;
  readonly manifest: SplitManifest;
  readonly tokenizer: TextTokenizer;
  readonly chatTemplate?: ChatTemplate;
  readonly contextLength?: number;
  readonly modelId: string;
  /** Every id that ends a generation (eos_token, and all generation_config.json and config.json list). */
  readonly stopTokenIds: readonly number[];
  private readonly options: HatDeviceOptions;
  private readonly link?: LinkSpec;
  private readonly parts: DeviceParts;
  private readonly queue: RequestQueue;
  /** Kept across requests: each opens its own cloud session, but the link and this device stay the same. */
  private readonly planner: ChunkPlanner;
  private closed = false;

  private constructor(
    bundle: string,
    manifest: SplitManifest,
    tokenizer: TextTokenizer,
    parts: DeviceParts,
    options: HatDeviceOptions,
  ) {
    this.bundle = bundle;
    this.manifest = manifest;
    this.tokenizer = tokenizer;
    this.parts = parts;
    this.options = options;
    this.chatTemplate = loadChatTemplate(bundle);
    this.contextLength = options.contextLength ?? configContext(bundle);
    this.modelId = options.modelId ?? basename(resolve(bundle));
    this.stopTokenIds = stopTokenIds(tokenizer, splitSpecialIds(bundle, manifest));
    this.link = typeof options.link === 'string' ? parseLinkSpec(options.link) : options.link;
    this.queue = new RequestQueue(options.maxQueue ?? 16);
    this.planner = devicePlanner(manifest, options.wire ?? 'fp16');
  }

  /** Opens a split directory or device bundle (input, output, adapter, manifest, tokenizer; no middle part). */
  static async open(bundle: string, options: HatDeviceOptions): Promise<HatDevice> {
    if (!/^wss?:\/\//.test(options.cloud)) {
      throw new HatError(
        'BAD_OPTION',
        `cloud: '${options.cloud}' is not a ws:// or wss:// URL`,
        'pass the serve-cloud address, e.g. ws://127.0.0.1:8765',
      );
    }
    const manifest = readManifest(bundle);
    const tokenizer = splitTokenizer(bundle, manifest);
    const speculative = options.speculative ?? true;
    const parts = await openDeviceParts(bundle, manifest, {
      withAdapter: speculative || Boolean(options.fallbackLocal),
      threads: options.threads,
    });
    return new HatDevice(bundle, manifest, tokenizer, parts, options);
  }

  /** Requests generating (0 or 1) and waiting. */
  get load(): { running: number; waiting: number; maxWaiting: number } {
    return { running: this.queue.running ? 1 : 0, waiting: this.queue.waiting, maxWaiting: this.queue.maxWaiting };
  }

  /**
   * The prompt's token ids and the token budget, checked against the model: NO_CHAT_TEMPLATE for a chat on a
   * model without one, CONTEXT_LENGTH when the prompt and maxTokens do not fit, BAD_OPTION for the rest.
   */
  prepare(prompt: Prompt, options: GenerateOptions = {}): PreparedRequest {
    let ids: number[];
    if (typeof prompt === 'object' && 'messages' in prompt) {
      if (!this.chatTemplate) {
        throw new HatError(
          'NO_CHAT_TEMPLATE',
          `the model ${this.modelId} has no chat template (no chat_template in its tokenizer_config.json)`,
          'send a plain prompt to /v1/completions, or add chat_template to tokenizer_config.json beside the model ' +
            'and split again',
        );
      }
      if (prompt.messages.length === 0) {
        throw new HatError('BAD_OPTION', 'messages is empty', 'send at least one message');
      }
      // The template writes the special tokens itself, so none are added again (as transformers does).
      ids = this.tokenizer.encode(this.chatTemplate.render(prompt.messages), false);
      if (ids.length === 0) {
        throw new HatError('BAD_OPTION', 'the chat template rendered these messages as no tokens', 'send some text');
      }
    } else {
      const input = typeof prompt === 'string' ? { text: prompt } : { ids: prompt.ids };
      ids = resolvePromptIds(input, this.tokenizer, this.manifest.model ?? {}, this.manifest.model?.vocabSize);
    }
    const context = this.contextLength;
    if (context !== undefined && ids.length >= context) {
      throw new HatError(
        'CONTEXT_LENGTH',
        `the prompt is ${ids.length} tokens and this model's context is ${context}, leaving no room to generate`,
        'send a shorter prompt',
      );
    }
    const maxTokens = options.maxTokens ?? (context === undefined ? DEFAULT_MAX_TOKENS : context - ids.length);
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new HatError('BAD_OPTION', `maxTokens must be a positive integer (got ${maxTokens})`);
    }
    if (context !== undefined && ids.length + maxTokens > context) {
      throw new HatError(
        'CONTEXT_LENGTH',
        `this model's context is ${context} tokens, and ${ids.length + maxTokens} were asked for ` +
          `(${ids.length} in the prompt, ${maxTokens} to generate)`,
        `ask for at most ${context - ids.length} tokens, or send a shorter prompt`,
      );
    }
    return {
      promptIds: ids,
      maxTokens,
      budgetGiven: options.maxTokens !== undefined,
      stop: (options.stop ?? []).filter((s) => s.length > 0),
    };
  }

  /** The whole generation at once. */
  async generate(prompt: Prompt, options: GenerateOptions = {}): Promise<GenerationResult> {
    const pieces = this.stream(prompt, options);
    for (;;) {
      const next = await pieces.next();
      if (next.done) return next.value;
    }
  }

  /**
   * Text as it is generated, piece by piece; the generator's return value (`next()` after the last piece, or
   * `generate`) is the GenerationResult. Leaving a `for await` loop early cancels the generation.
   */
  async *stream(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<string, GenerationResult, void> {
    if (this.closed) throw new HatError('BAD_OPTION', 'this HatDevice is closed');
    const request = this.prepare(prompt, options);
    const queuedAt = performance.now();
    const cancelled = () => cancelledResult(request.promptIds.length, performance.now() - queuedAt);
    let release: () => void;
    try {
      release = await this.queue.acquire(options.signal);
    } catch (error) {
      if (error === CANCELLED_WHILE_QUEUED) return cancelled();
      throw error;
    }
    try {
      return yield* this.run(request, options, performance.now() - queuedAt);
    } finally {
      release();
    }
  }

  private async *run(
    request: PreparedRequest,
    options: GenerateOptions,
    queuedMs: number,
  ): AsyncGenerator<string, GenerationResult, void> {
    const { promptIds } = request;
    const budget: TokenBudget = { maxTokens: request.maxTokens, given: request.budgetGiven };
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const stop = new StopText(request.stop);
    const streamer = textStreamer(this.tokenizer, promptIds);
    const committed: number[] = [];
    const pieces: string[] = [];
    let wake: (() => void) | undefined;
    const emit = (text: string) => {
      if (text) {
        pieces.push(text);
        wake?.();
      }
    };
    const onTokens = (ids: number[]) => {
      if (stop.stopped) return;
      committed.push(...ids);
      emit(stop.push(streamer.push(...ids)));
      if (stop.stopped) abort.abort();
    };
    let outcome: { generation: HatGeneration; maxTokens: number } | { error: unknown } | undefined;
    const timing = { connectMs: 0 };
    const running = this.generateOnCloud(promptIds, budget, options, abort.signal, onTokens, timing)
      .then(
        (done) => {
          outcome = done;
        },
        (error: unknown) => {
          outcome = { error };
        },
      )
      .finally(() => wake?.());
    try {
      for (;;) {
        if (pieces.length > 0) {
          yield pieces.splice(0).join('');
          continue;
        }
        if (outcome) break;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
      if ('error' in outcome && outcome.error === GENERATION_CANCELLED) {
        return { ...cancelledResult(promptIds.length, queuedMs), connectMs: timing.connectMs };
      }
      if ('error' in outcome) throw outcome.error;
      const { generation, maxTokens } = outcome;
      if (!stop.stopped) {
        const rest = stop.push(streamer.flush());
        const tail = rest + stop.flush();
        if (tail) yield tail;
      }
      let completion = committed;
      let finishReason: FinishReason;
      if (stop.stopped) {
        const textOf = (k: number) => continuationText(this.tokenizer, promptIds, committed.slice(0, k));
        completion = committed.slice(0, tokensUntilStop(committed.length, request.stop, textOf));
        finishReason = 'stop';
      } else if (generation.error) {
        // The cloud was lost (after any reconnects): the text so far has been streamed; the request fails.
        throw generation.error;
      } else if (committed.length > 0 && this.stopTokenIds.includes(committed[committed.length - 1])) {
        finishReason = 'stop';
      } else {
        finishReason = committed.length >= maxTokens ? 'length' : 'cancelled';
      }
      return {
        text: stop.output,
        ids: completion,
        promptTokens: promptIds.length,
        completionTokens: completion.length,
        finishReason,
        queuedMs,
        connectMs: timing.connectMs,
        metrics: generation.metrics,
      };
    } finally {
      abort.abort();
      await running;
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Opens a cloud session and closes it: NETWORK when serve-cloud cannot be reached or refuses this split. */
  async checkCloud(): Promise<void> {
    (await this.connect({ temperature: 0, topP: 1, seed: 0 })).close();
  }

  private connect(sampling: { temperature: number; topP: number; seed: number }) {
    const o = this.options;
    return connectDeviceGenerator({
      parts: freshParts(this.parts),
      cloud: { url: o.cloud, wire: o.wire ?? 'fp16', token: o.token, link: this.link, recordUplink: o.recordUplink },
      sampling,
      draftThreshold: o.draftThreshold ?? 'auto',
      maxDraft: o.maxDraft ?? 6,
      reconnects: o.reconnects ?? 0,
      fallbackLocal: o.fallbackLocal ?? false,
      planner: this.planner,
    });
  }

  /** One generation over its own cloud session, on fresh caches. */
  private async generateOnCloud(
    promptIds: number[],
    budget: TokenBudget,
    options: GenerateOptions,
    signal: AbortSignal,
    onTokens: (ids: number[]) => void,
    timing: { connectMs: number },
  ): Promise<{ generation: HatGeneration; maxTokens: number }> {
    const o = this.options;
    const speculative = o.speculative ?? true;
    const started = performance.now();
    const connecting = this.connect({
      temperature: options.temperature ?? 0,
      topP: options.topP ?? 1,
      seed: options.seed ?? randomInt(2 ** 31),
    });
    // A client gone while the cloud session opens (retries and backoff included) frees the slot at once; the session,
    // when it opens, is closed.
    const device = await untilAborted(connecting, signal).catch((error: unknown) => {
      if (error === GENERATION_CANCELLED)
        connecting.then(
          (d) => d.close(),
          () => {},
        );
      throw error;
    });
    timing.connectMs = performance.now() - started;
    try {
      const maxTokens = budgetWithinCloudContext(promptIds.length, budget, device.cloudContext, {
        code: 'CONTEXT_LENGTH',
        option: 'max_tokens',
      });
      const generation = await device.generator.generate(promptIds, {
        maxNewTokens: maxTokens,
        stopTokenIds: this.stopTokenIds,
        speculative,
        parallelDrafting: (o.parallelDrafting ?? true) && speculative,
        parallelBranches: o.parallelBranches ?? 1,
        chunk: o.chunk ?? 'auto',
        signal,
        onTokens,
      });
      return { generation, maxTokens };
    } finally {
      device.close();
    }
  }

  /** Waits for the running request, refuses new ones and releases the onnxruntime sessions. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const release = await this.queue.acquire(undefined, { unbounded: true });
    const { input, output, draftOutput, adapter } = this.parts;
    const sessions = new Set([input.session, output.session, draftOutput.session, adapter?.session]);
    for (const session of sessions) await session?.release();
    release();
  }
}
