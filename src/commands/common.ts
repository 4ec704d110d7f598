/** What every thin command shares: option validation with zod, turned into HatError. */
import { z } from 'zod';
import { HatError } from '../errors.ts';
import { parsePromptIds, type PromptInput } from '../runtime/prompt.ts';

export { z };

/** Validates commander's raw options against a command's schema; the first problem becomes one HatError line. */
export function parseOptions<T extends z.ZodType>(schema: T, raw: unknown): z.infer<T> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue.path.length ? `--${issue.path.map(String).join('.').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : 'options';
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
