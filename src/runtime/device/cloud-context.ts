/**
 * A cloud started with a smaller --max-context than the model's would stop a session part-way; the device refuses
 * such a request before any token instead, with the code its caller maps (run-device: CONTEXT_LIMIT; the device
 * API: CONTEXT_LENGTH, which OpenAI clients get as 400 context_length_exceeded).
 */
import { HatError } from '../../errors.ts';

export interface TokenBudget {
  maxTokens: number;
  /** The caller asked for maxTokens; otherwise it is a default, lowered to the room the cloud's context leaves. */
  given: boolean;
}

export interface ContextRefusal {
  code: 'CONTEXT_LIMIT' | 'CONTEXT_LENGTH';
  /** How the caller names the budget in the hint: `--max-new-tokens`, `max_tokens`. */
  option: string;
}

/** The tokens the session may generate within the cloud's context; throws `refusal.code` when they do not fit. */
export function budgetWithinCloudContext(
  promptTokens: number,
  budget: TokenBudget,
  cloudContext: number | undefined,
  refusal: ContextRefusal,
): number {
  if (cloudContext === undefined) return budget.maxTokens;
  const room = cloudContext - promptTokens;
  const maxTokens = budget.given || room <= 0 ? budget.maxTokens : Math.min(budget.maxTokens, room);
  if (maxTokens <= room) return maxTokens;
  throw new HatError(
    refusal.code,
    `the cloud serves at most ${cloudContext} positions per session: the prompt (${promptTokens} tokens) + ` +
      `${maxTokens} to generate = ${promptTokens + maxTokens}`,
    room > 0 ? `lower ${refusal.option} to at most ${room}, or shorten the prompt` : 'shorten the prompt',
  );
}
