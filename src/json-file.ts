/** A JSON file hat reads (config.json, tokenizer files): a malformed one is a HatError naming it, not a SyntaxError. */
import { readFileSync } from 'node:fs';
import { HatError } from './errors.ts';

/** Whether a parsed JSON value is an object (not `null`, a list or a scalar): what hat's JSON inputs must be. */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function readJsonFile(path: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new HatError(
      'BAD_CHECKPOINT',
      `${what} ${path} is not valid JSON (${(error as Error).message.split('\n')[0]})`,
      'regenerate or re-download it',
    );
  }
  // Valid JSON that is not an object (`null`, a list) would otherwise surface as a TypeError where a field is read.
  if (!isJsonObject(value)) {
    const found = value === null ? 'null' : Array.isArray(value) ? 'a list' : `a ${typeof value}`;
    throw new HatError(
      'BAD_CHECKPOINT',
      `${what} ${path} holds ${found}, not a JSON object`,
      'regenerate or re-download it',
    );
  }
  return value;
}
