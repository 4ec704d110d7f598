/** A JSON file hat reads (config.json, tokenizer files): a malformed one is a HatError naming it, not a SyntaxError. */
import { readFileSync } from 'node:fs';
import { HatError } from './errors.ts';

export function readJsonFile(path: string, what: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${what} ${path} is not valid JSON (${(error as Error).message.split('\n')[0]})`,
      'regenerate or re-download it',
    );
  }
}
