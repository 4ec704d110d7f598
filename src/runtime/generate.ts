/**
 * Full-model generation: prefill the prompt, then one token per step until EOS or the token budget. It runs
 * over the abstract CausalLm (step ids → logits), so the split runtime can drive the same loop.
 */
import { HatError } from '../errors.ts';
import { resolveModelFiles } from '../models/model-dir.ts';
import { OnnxCausalLm, type CausalLm } from './full-model.ts';
import { makeSampler, type Sampler, type SamplingOptions } from './sampling.ts';
import type { SessionOptions } from './session.ts';
import { continuationText, encodePrompt, loadTokenizer, textStreamer } from './tokenizer.ts';
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
  stopReason: 'stop-token' | 'max-new-tokens';
  /** Time to first token: prompt prefill + first sample. */
  ttftMs: number;
  /** Mean time between tokens after the first; null when fewer than two were generated. */
  tbtMs: number | null;
}

export async function generateTokens(model: CausalLm, promptIds: readonly number[], options: TokenLoopOptions): Promise<TokenLoopResult> {
  if (promptIds.length === 0) throw new HatError('INTERNAL', 'generation needs at least one prompt token');
  const stop = new Set(options.stopTokenIds ?? []);
  const ids: number[] = [];
  const started = performance.now();
  let firstAt = started;
  let lastAt = started;
  let next = promptIds;
  while (ids.length < options.maxNewTokens) {
    const output = await model.step(next, { lastOnly: true });
    const id = options.sampler(output.data.subarray((output.rows - 1) * output.cols, output.rows * output.cols));
    lastAt = performance.now();
    if (ids.length === 0) firstAt = lastAt;
    ids.push(id);
    options.onToken?.(id);
    if (stop.has(id)) break;
    next = [id];
  }
  return {
    ids,
    stopReason: ids.length > 0 && stop.has(ids[ids.length - 1]) ? 'stop-token' : 'max-new-tokens',
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

async function openFullModel(modelPath: string, session?: SessionOptions) {
  const files = resolveModelFiles(modelPath);
  if (!files.tokenizer) {
    throw new HatError('FILE_NOT_FOUND', `no tokenizer.json beside ${files.model}`, 'put the model\'s Hugging Face tokenizer.json in the same folder');
  }
  const tokenizer = loadTokenizer({ tokenizer: files.tokenizer, tokenizerConfig: files.tokenizerConfig, config: files.config });
  return { model: await OnnxCausalLm.open(files.model, session), tokenizer };
}

async function openSlm(splitDir: string, session?: SessionOptions) {
  const tokenizer = splitTokenizer(splitDir, readManifest(splitDir));
  return { model: await SlmCausalLm.open(splitDir, session), tokenizer };
}

export interface GenerateTextResult extends TokenLoopResult {
  promptIds: number[];
  text: string;
}

/**
 * Generation from a model file or folder with its tokenizer.json — or, with `slm`, from a split directory's small
 * model (input part → adapter → output part): text in, text (streamed) and ids out.
 */
export async function generateText(modelPath: string, prompt: string, options: GenerateTextOptions): Promise<GenerateTextResult> {
  const { model, tokenizer } = options.slm ? await openSlm(modelPath, options.session) : await openFullModel(modelPath, options.session);
  try {
    const promptIds = encodePrompt(tokenizer, prompt);
    const { onText } = options;
    // Streaming decodes the text so far after every token; without a listener, skip that work (it counts in tbtMs).
    const streamer = onText ? textStreamer(tokenizer, promptIds) : undefined;
    const result = await generateTokens(model, promptIds, {
      maxNewTokens: options.maxNewTokens,
      sampler: makeSampler(options),
      stopTokenIds: tokenizer.eosTokenId === undefined ? [] : [tokenizer.eosTokenId],
      onToken: streamer && onText ? (id) => { const text = streamer.push(id); if (text) onText(text); } : undefined,
    });
    const rest = streamer?.flush();
    if (rest) onText?.(rest);
    return { ...result, promptIds, text: continuationText(tokenizer, promptIds, result.ids) };
  } finally {
    await model.release();
  }
}
