/**
 * Full-model generation: prefill the prompt, then one token per step until EOS or the token budget. It runs
 * over the abstract CausalLm (step ids → logits), so the split runtime can drive the same loop.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HatError } from '../errors.ts';
import { resolveModelFiles } from '../models/model-dir.ts';
import { OnnxCausalLm, type CausalLm } from './full-model.ts';
import { makeSampler, type Sampler, type SamplingOptions } from './sampling.ts';
import type { SessionOptions } from './session.ts';
import { TokenCommitter, type StopReason } from './token-commit.ts';
import { configSpecialIds, promptIds as resolvePromptIds, type PromptInput, type SpecialIds } from './prompt.ts';
import { continuationText, loadTokenizer, textStreamer, type TextTokenizer } from './tokenizer.ts';
import { readManifest, splitTokenizer } from './split-dir.ts';
import { SlmCausalLm } from './device/slm.ts';

export interface TokenLoopOptions {
  maxNewTokens: number;
  sampler: Sampler;
  /** Generation stops after emitting one of these (it is included in the result). */
  stopTokenIds?: readonly number[];
  onToken?: (id: number) => void;
}

export interface TokenLoopResult {
  /** Generated ids, prompt excluded. */
  ids: number[];
  stopReason: StopReason;
  /** Time to first token: prompt prefill + first sample. */
  ttftMs: number;
  /** Mean time between tokens after the first; null when fewer than two were generated. */
  tbtMs: number | null;
}

export async function generateTokens(model: CausalLm, promptIds: readonly number[], options: TokenLoopOptions): Promise<TokenLoopResult> {
  if (promptIds.length === 0) throw new HatError('INTERNAL', 'generation needs at least one prompt token');
  const committer = new TokenCommitter({
    maxNewTokens: options.maxNewTokens, stopTokenIds: options.stopTokenIds,
    onTokens: options.onToken && ((ids) => ids.forEach(options.onToken!)),
  });
  const started = performance.now();
  let firstAt = started;
  let lastAt = started;
  let next = promptIds;
  while (!committer.done) {
    const output = await model.step(next, { lastOnly: true });
    const id = options.sampler(output.data.subarray((output.rows - 1) * output.cols, output.rows * output.cols));
    lastAt = performance.now();
    if (committer.ids.length === 0) firstAt = lastAt;
    committer.commit([id]);
    next = [id];
  }
  const { ids } = committer;
  return {
    ids,
    stopReason: committer.stopReason,
    ttftMs: firstAt - started,
    tbtMs: ids.length > 1 ? (lastAt - firstAt) / (ids.length - 1) : null,
  };
}

export interface GenerateTextOptions extends SamplingOptions {
  maxNewTokens: number;
  seed: number;
  session?: SessionOptions;
  /** Receives decoded text as it is produced. */
  onText?: (text: string) => void;
  /** `modelPath` is a split directory: generate with its small model alone. */
  slm?: boolean;
}

interface OpenedModel {
  model: CausalLm & { release(): Promise<void> };
  /** Absent for a model without tokenizer.json: only `--prompt-ids` can drive it, and only ids come out. */
  tokenizer?: TextTokenizer;
  special: SpecialIds;
}

async function openFullModel(modelPath: string, session?: SessionOptions): Promise<OpenedModel> {
  const files = resolveModelFiles(modelPath);
  const tokenizer = files.tokenizer
    ? loadTokenizer({ tokenizer: files.tokenizer, tokenizerConfig: files.tokenizerConfig, config: files.config })
    : undefined;
  return { model: await OnnxCausalLm.open(files.model, session), tokenizer, special: configSpecialIds(dirname(files.model)) };
}

async function openSlm(splitDir: string, session?: SessionOptions): Promise<OpenedModel> {
  const manifest = readManifest(splitDir);
  const tokenizer = existsSync(join(splitDir, manifest.tokenizer ?? 'tokenizer.json')) ? splitTokenizer(splitDir, manifest) : undefined;
  const special = { bosTokenId: manifest.model?.bosTokenId, eosTokenId: manifest.model?.eosTokenId };
  return { model: await SlmCausalLm.open(splitDir, session), tokenizer, special };
}

export interface GenerateTextResult extends TokenLoopResult {
  promptIds: number[];
  /** The continuation's text; undefined when the model has no tokenizer. */
  text?: string;
}

/**
 * Generation from a model file or folder — or, with `slm`, from a split directory's small model (input part →
 * adapter → output part): text or ids in, text (streamed) and ids out. Without tokenizer.json only ids work.
 */
export async function generateText(modelPath: string, prompt: string | PromptInput, options: GenerateTextOptions): Promise<GenerateTextResult> {
  const { model, tokenizer, special } = options.slm ? await openSlm(modelPath, options.session) : await openFullModel(modelPath, options.session);
  try {
    const promptIds = resolvePromptIds(typeof prompt === 'string' ? { text: prompt } : prompt, tokenizer, special, model.vocabSize);
    const { onText } = options;
    // Streaming decodes the text so far after every token; without a listener, skip that work (it counts in tbtMs).
    const streamer = onText && tokenizer ? textStreamer(tokenizer, promptIds) : undefined;
    const eos = tokenizer?.eosTokenId ?? special.eosTokenId;
    const result = await generateTokens(model, promptIds, {
      maxNewTokens: options.maxNewTokens,
      sampler: makeSampler(options),
      stopTokenIds: eos === undefined ? [] : [eos],
      onToken: streamer && onText ? (id) => { const text = streamer.push(id); if (text) onText(text); } : undefined,
    });
    const rest = streamer?.flush();
    if (rest) onText?.(rest);
    return { ...result, promptIds, text: tokenizer && continuationText(tokenizer, promptIds, result.ids) };
  } finally {
    await model.release();
  }
}
