/** What every thin command shares: option validation with zod, turned into HatError. */
import { z } from 'zod';
import { HatError } from '../errors.ts';

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
