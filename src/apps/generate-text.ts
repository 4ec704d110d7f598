/**
 * `hat generate`'s core: open a model file or folder (or, with `slm`, a split directory's small model), resolve the
 * prompt (text or ids), run the plain generation loop and stream the text.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolveModelFiles } from '../models/model-dir.ts';
import { SlmCausalLm } from '../runtime/device/slm.ts';
import { OnnxCausalLm, type CausalLm } from '../runtime/full-model.ts';
import { generateTokens, type TokenLoopResult } from '../runtime/generate.ts';
import {
  configSpecialIds,
  promptIds as resolvePromptIds,
  stopTokenIds,
  type PromptInput,
  type SpecialIds,
} from '../runtime/prompt.ts';
import { makeSampler, type SamplingOptions } from '../runtime/sampling.ts';
import type { SessionOptions } from '../runtime/session.ts';
import { readManifest, splitSpecialIds, splitTokenizer } from '../runtime/split-dir.ts';
import { continuationText, loadTokenizer, textStreamer, type TextTokenizer } from '../runtime/tokenizer.ts';

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
    ? loadTokenizer({
        tokenizer: files.tokenizer,
        tokenizerConfig: files.tokenizerConfig,
        config: files.config,
        generationConfig: files.generationConfig,
      })
    : undefined;
  return {
    model: await OnnxCausalLm.open(files.model, session),
    tokenizer,
    special: configSpecialIds(dirname(files.model)),
  };
}

async function openSlm(splitDir: string, session?: SessionOptions): Promise<OpenedModel> {
  const manifest = readManifest(splitDir);
  const tokenizer = existsSync(join(splitDir, manifest.tokenizer ?? 'tokenizer.json'))
    ? splitTokenizer(splitDir, manifest)
    : undefined;
  return { model: await SlmCausalLm.open(splitDir, session), tokenizer, special: splitSpecialIds(splitDir, manifest) };
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
export async function generateText(
  modelPath: string,
  prompt: string | PromptInput,
  options: GenerateTextOptions,
): Promise<GenerateTextResult> {
  const { model, tokenizer, special } = options.slm
    ? await openSlm(modelPath, options.session)
    : await openFullModel(modelPath, options.session);
  try {
    const promptIds = resolvePromptIds(
      typeof prompt === 'string' ? { text: prompt } : prompt,
      tokenizer,
      special,
      model.vocabSize,
    );
    const { onText } = options;
    // Streaming decodes the text so far after every token; without a listener, skip that work (it counts in tbtMs).
    const streamer = onText && tokenizer ? textStreamer(tokenizer, promptIds) : undefined;
    const result = await generateTokens(model, promptIds, {
      maxNewTokens: options.maxNewTokens,
      sampler: makeSampler(options),
      stopTokenIds: stopTokenIds(tokenizer, special),
      onToken:
        streamer && onText
          ? (id) => {
              const text = streamer.push(id);
              if (text) onText(text);
            }
          : undefined,
    });
    const rest = streamer?.flush();
    if (rest) onText?.(rest);
    return { ...result, promptIds, text: tokenizer && continuationText(tokenizer, promptIds, result.ids) };
  } finally {
    await model.release();
  }
}
