/** What every thin command shares: option validation with zod, turned into HatError. */
import { assertReadableFile } from '../file-checks.ts';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { HatError } from '../errors.ts';
import { parsePromptIds, type PromptInput } from '../runtime/prompt.ts';

export { z };

/** Options where an empty value means something (start from BOS); anywhere else `--x ""` is a mistake. */
const EMPTY_ALLOWED = new Set(['prompt', 'promptIds']);

const flag = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Validates commander's raw options against a command's schema; the first problem becomes one HatError line. */
export function parseOptions<T extends z.ZodType>(schema: T, raw: unknown): z.infer<T> {
  // An empty string would otherwise pass as a number 0 (z.coerce) or fall back to a default path.
  for (const [key, value] of Object.entries((raw ?? {}) as Record<string, unknown>)) {
    if (typeof value === 'string' && value.trim() === '' && !EMPTY_ALLOWED.has(key)) {
      throw new HatError('BAD_OPTION', `${flag(key)} is empty`, 'give it a value, or leave the option out');
    }
  }
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue.path.length ? flag(issue.path.map(String).join('.')) : 'options';
  throw new HatError('BAD_OPTION', `${field}: ${issue.message}`, 'run the command with --help for the accepted values');
}

/** Commander passes numbers as strings; this coerces and checks an integer option. */
export const intOption = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
export const numberOption = (min: number, max = Number.MAX_VALUE) => z.coerce.number().min(min).max(max);

/** `--prompt <text>` / `--prompt-ids 1,2,3`, shared by generate and run-device. */
export const promptOptions = {
  prompt: z.string().optional(),
  promptIds: z.string().transform(parsePromptIds).optional(),
};

export function promptInput(options: { prompt?: string; promptIds?: number[] }): PromptInput {
  if (options.prompt !== undefined && options.promptIds !== undefined) {
    throw new HatError('BAD_OPTION', '--prompt and --prompt-ids were both given', 'give one of them');
  }
  return options.promptIds !== undefined ? { ids: options.promptIds } : { text: options.prompt ?? '' };
}

export const PROMPT_HELP = {
  prompt: 'prompt text (empty: start from BOS)',
  promptIds: 'prompt as comma-separated token ids, for models without a tokenizer (empty: start from BOS)',
};

/**
 * The shared secret, from HAT_TOKEN or --token-file (never needed on the command line, where `ps` shows it),
 * or --token for local experiments. Trailing whitespace of a file is dropped.
 */
export function readToken(options: { token?: string; tokenFile?: string }): string | undefined {
  if (options.tokenFile !== undefined) {
    assertReadableFile(options.tokenFile, `--token-file ${options.tokenFile}`, 'give a file holding the shared secret');
    const token = readFileSync(options.tokenFile, 'utf8').trim();
    if (!token)
      throw new HatError('BAD_OPTION', `--token-file ${options.tokenFile} is empty`, 'put the shared secret in it');
    return token;
  }
  return options.token ?? (process.env.HAT_TOKEN || undefined);
}

/**
 * Resolves with the first SIGINT or SIGTERM. A server calls it before it prints where it listens: a signal sent the
 * moment that line is read would otherwise end the process by its default action, with no drain.
 */
export function firstSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}
