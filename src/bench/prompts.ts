/**
 * The prompts every scenario runs: from a JSONL file (`{"prompt": "..."}` or `{"ids": [...]}` per line), or of
 * given lengths cut from a held-out passage (1 John 1–5, KJV, public domain — text the default model never
 * trained on) when the split has a tokenizer, else seeded pseudo-random token ids.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { HatError } from '../errors.ts';
import { assertReadableFile } from '../file-checks.ts';
import { isJsonObject } from '../json-file.ts';
import { readManifest, splitTokenizer } from '../runtime/split-dir.ts';
import { assertTokenIds } from '../runtime/prompt.ts';
import type { TextTokenizer } from '../runtime/tokenizer.ts';
import type { SplitManifest } from '../split/manifest.ts';
import { seededUniform } from '../runtime/sampling.ts';
import { configContext } from '../runtime/model-config.ts';

export interface BenchPrompt {
  ids: number[];
  /** The prompt as text, when known (cloud-only sends it): it encodes back to exactly `ids`. */
  text?: string;
  /** Whether `text` encodes to `ids` with the tokenizer's special tokens (BOS) added. */
  textAddsSpecialTokens?: boolean;
  /** Where it came from, for the report. */
  source: string;
}

export function splitTokenizerIfAny(splitDir: string): TextTokenizer | undefined {
  const manifest = readManifest(splitDir);
  return existsSync(join(splitDir, manifest.tokenizer ?? 'tokenizer.json'))
    ? splitTokenizer(splitDir, manifest)
    : undefined;
}

const PASSAGE = new URL('./held-out-passage.txt', import.meta.url);

/**
 * `ids` as text that the cloud-only server encodes back to the same ids: a passage slice that does not start at
 * the passage's BOS encodes without special tokens. Undefined when neither way round-trips (ids are sent then).
 */
function asText(ids: readonly number[], tokenizer: TextTokenizer): Pick<BenchPrompt, 'text' | 'textAddsSpecialTokens'> {
  const text = tokenizer.decode([...ids]);
  const same = (other: number[]) => other.length === ids.length && other.every((id, i) => id === ids[i]);
  for (const addSpecialTokens of [true, false])
    if (same(tokenizer.encode(text, addSpecialTokens))) return { text, textAddsSpecialTokens: addSpecialTokens };
  return {};
}

/** Corpora larger than this are not read for the check below (a note is a courtesy, not worth gigabytes). */
const LEAK_CHECK_MAX_BYTES = 256 * 1024 * 1024;

/**
 * A note when the adapter's training corpus, as its manifest entry recorded it and if it is on this machine, holds
 * the passage the prompts are cut from: its drafts were then fitted on the benchmark's own text and accept more
 * than they would on a user's. Every adapter shipped before 2026-12-03 was (fixtures/README.md). The corpus may wrap
 * lines anywhere, so both sides are compared with whitespace collapsed; three 80-character probes spread over the
 * passage, two of which must be found.
 */
export function passageInAdapterCorpus(manifest: SplitManifest): string | undefined {
  const corpus = (manifest.adapter?.metrics as { data?: { corpus?: unknown } } | undefined)?.data?.corpus;
  if (typeof corpus !== 'string') return undefined;
  const file = statSync(corpus, { throwIfNoEntry: false });
  if (!file?.isFile() || file.size > LEAK_CHECK_MAX_BYTES) return undefined;
  const collapse = (text: string) => text.replace(/\s+/g, ' ');
  const passage = collapse(readFileSync(PASSAGE, 'utf8'));
  const text = collapse(readFileSync(corpus, 'utf8'));
  const probes = [0.1, 0.5, 0.9].map((at) =>
    passage.slice(Math.floor(at * passage.length), 80 + Math.floor(at * passage.length)),
  );
  if (probes.filter((probe) => text.includes(probe)).length < 2) return undefined;
  return (
    `the adapter was trained on ${corpus}, which holds the passage the prompts are cut from (1 John 1–5): its ` +
    'drafts were fitted on this text, so tokens per round read high — train it without the passage ' +
    '(fixtures/README.md) or give --prompts from text it did not see'
  );
}

const HINT_IDS = "give ids of this split's tokenizer";

/** The line's JSON object, or undefined when it is not JSON or not an object (`null`, a list, a number). */
function jsonObject(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return isJsonObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

export function promptsFromFile(file: string, tokenizer: TextTokenizer | undefined, vocabSize: number): BenchPrompt[] {
  assertReadableFile(
    file,
    `--prompts ${file}`,
    'give a JSONL file with one {"prompt": ...} or {"ids": [...]} per line',
  );
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const prompts = lines.map((line, i): BenchPrompt => {
    const entry = jsonObject(line) as { prompt?: unknown; text?: unknown; ids?: unknown } | undefined;
    if (!entry) {
      throw new HatError(
        'BAD_OPTION',
        `--prompts ${file}:${i + 1} is not a JSON object`,
        'one object per line: {"prompt": "..."} or {"ids": [1, 2, 3]}',
      );
    }
    const text = entry.prompt ?? entry.text;
    if (typeof text === 'string' && text.length) {
      if (!tokenizer)
        throw new HatError(
          'BAD_OPTION',
          `--prompts ${file}:${i + 1} is text, and the split has no tokenizer.json`,
          'give {"ids": [...]} lines instead',
        );
      const ids = tokenizer.encode(text);
      assertTokenIds(ids, vocabSize, `--prompts ${file}:${i + 1}:`, HINT_IDS);
      return { ids, text, textAddsSpecialTokens: true, source: `${file}:${i + 1}` };
    }
    if (Array.isArray(entry.ids) && entry.ids.length && entry.ids.every((x) => Number.isInteger(x) && x >= 0)) {
      assertTokenIds(entry.ids as number[], vocabSize, `--prompts ${file}:${i + 1}:`, HINT_IDS);
      return { ids: entry.ids as number[], source: `${file}:${i + 1}` };
    }
    throw new HatError(
      'BAD_OPTION',
      `--prompts ${file}:${i + 1} has neither a non-empty "prompt" string nor an "ids" array`,
    );
  });
  if (!prompts.length) throw new HatError('BAD_OPTION', `--prompts ${file} holds no prompt`);
  return prompts;
}

/** `perLength` prompts of each length; the k-th starts k·97 tokens into the passage (or uses seed k). */
export function promptsOfLengths(
  lengths: readonly number[],
  perLength: number,
  tokenizer: TextTokenizer | undefined,
  vocabSize: number,
): BenchPrompt[] {
  const passage = tokenizer ? tokenizer.encode(readFileSync(PASSAGE, 'utf8')) : [];
  const prompts: BenchPrompt[] = [];
  for (const length of lengths) {
    for (let k = 0; k < perLength; k++) {
      if (tokenizer) {
        const ids = Array.from({ length }, (_, i) => passage[(k * 97 + i) % passage.length]);
        const wrapped = k * 97 + length > passage.length ? ' (passage repeated)' : '';
        prompts.push({
          ids,
          ...asText(ids, tokenizer),
          source: `1 John 1–5, ${length} tokens from token ${k * 97}${wrapped}`,
        });
      } else {
        const random = seededUniform(1000 * length + k);
        const ids = Array.from({ length }, () => 3 + Math.floor(random() * Math.max(1, vocabSize - 3)));
        prompts.push({ ids, source: `${length} seeded random token ids (no tokenizer)` });
      }
    }
  }
  return prompts;
}

/**
 * Prompt lengths that fit the context with the new tokens and a round of drafts: longer ones are clamped to the
 * longest that fits (duplicates dropped), with a note saying so.
 */
export function clampLengths(
  splitDir: string,
  lengths: readonly number[],
  maxNewTokens: number,
  maxDraft: number,
): { lengths: number[]; note?: string } {
  const limit = configContext(splitDir);
  if (!limit) return { lengths: [...lengths] };
  const longest = limit - maxNewTokens - maxDraft - 1;
  if (longest < 1) {
    throw new HatError(
      'BAD_OPTION',
      `--max-new-tokens ${maxNewTokens} + drafts leave no room for a prompt in the model's context of ${limit}`,
      `use at most ${limit - maxDraft - 2} new tokens`,
    );
  }
  const clamped = [...new Set(lengths.map((l) => Math.min(l, longest)))];
  const changed = lengths.filter((l) => l > longest);
  return {
    lengths: clamped,
    note: changed.length
      ? `prompt lengths ${changed.join(', ')} clamped to ${longest} tokens: the model's context ` +
        `(config.json) is ${limit}, and each session also needs ${maxNewTokens} new tokens + ` +
        `${maxDraft + 1} draft positions`
      : undefined,
  };
}

/** The positions a request needs must fit the model's context (config.json, if it says). */
export function checkContext(
  splitDir: string,
  prompts: readonly BenchPrompt[],
  maxNewTokens: number,
  maxDraft: number,
): void {
  const limit = configContext(splitDir);
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  if (limit && longest + maxNewTokens + maxDraft + 1 > limit) {
    throw new HatError(
      'BAD_OPTION',
      `the longest prompt (${longest} tokens) + --max-new-tokens ${maxNewTokens} ` +
        `+ drafts exceeds the model's context of ${limit}`,
      `use shorter --prompt-lengths or fewer --max-new-tokens ` +
        `(at most ${limit - maxNewTokens - maxDraft - 1} prompt tokens)`,
    );
  }
}
