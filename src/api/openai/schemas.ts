/**
 * The request bodies the device accepts, as zod schemas. Fields OpenAI defines and hat honours are typed and
 * range-checked; other fields are accepted and ignored (clients send many optional ones); a few whose meaning
 * hat cannot honour (n > 1, logprobs, tools, echo, suffix, best_of > 1, several prompts) are refused by name.
 */
import { z } from 'zod';
import { ApiError } from './errors.ts';

const stopSchema = z.union([z.string(), z.array(z.string()).max(4)], {
  error: 'expected a string or an array of at most 4 strings',
});

const sampling = {
  model: z.string(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  // Any integer-valued number, not only a safe integer (zod's int()): OpenAI takes 64-bit seeds, which JSON
  // brings here as doubles; the server reduces them modulo 2^32 (the device's PRNG seed).
  seed: z.number().refine(Number.isInteger, { error: 'expected an integer' }).nullish(),
  stop: stopSchema.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  n: z.number().int().min(1).nullish(),
  user: z.string().nullish(),
};

const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });

const message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z
    .union([z.string(), z.array(contentPart), z.null()], {
      error: 'expected a string or an array of content parts',
    })
    .optional(),
  name: z.string().optional(),
});

export const chatRequestSchema = z.looseObject({
  ...sampling,
  messages: z.array(message),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  tools: z.array(z.unknown()).nullish(),
});

const tokenIds = z.array(z.number().int().min(0));

export const completionRequestSchema = z.looseObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()), tokenIds, z.array(tokenIds)], {
    error: 'expected a string, an array of token ids, or an array with one of those',
  }),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
  best_of: z.number().int().min(1).nullish(),
  logprobs: z.number().int().min(0).nullish(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type CompletionRequest = z.infer<typeof completionRequestSchema>;

const unsupported = (param: string, message: string) =>
  new ApiError(400, message, { param, code: 'unsupported_parameter' });

/** Refuses what hat cannot honour, naming the parameter. */
export function checkSupported(request: ChatRequest | CompletionRequest): void {
  if ((request.n ?? 1) > 1) throw unsupported('n', 'n > 1 is not supported: one choice per request');
  if (request.logprobs) throw unsupported('logprobs', 'logprobs are not supported');
  if ('messages' in request) {
    const { tools } = request as ChatRequest;
    if (tools?.length) throw unsupported('tools', 'tools are not supported');
  } else {
    const completion = request as CompletionRequest;
    if (completion.echo) throw unsupported('echo', 'echo is not supported');
    if (completion.suffix) throw unsupported('suffix', 'suffix is not supported');
    if ((completion.best_of ?? 1) > 1) throw unsupported('best_of', 'best_of > 1 is not supported');
  }
}

/** A message's content as text: a string, or the text parts of a content array joined by newlines. */
export function messageText(content: ChatRequest['messages'][number]['content'], index: number): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  const other = content.findIndex((part) => part.type !== 'text' || typeof part.text !== 'string');
  if (other >= 0) {
    throw new ApiError(400, `content parts of type '${content[other].type}' are not supported (text only)`, {
      param: `messages[${index}].content[${other}]`,
      code: 'unsupported_content',
    });
  }
  return content.map((part) => part.text).join('\n');
}

/** The completions prompt: one string or one list of token ids (a batch of several is refused). */
export function completionPrompt(prompt: CompletionRequest['prompt']): string | { ids: number[] } {
  if (typeof prompt === 'string') return prompt;
  if (prompt.length > 0 && prompt.every((p) => typeof p === 'number')) return { ids: prompt as number[] };
  if (prompt.length === 0) return '';
  if (prompt.length > 1) {
    throw new ApiError(400, 'several prompts in one request are not supported: send one per request', {
      param: 'prompt',
      code: 'unsupported_parameter',
    });
  }
  const only = prompt[0] as string | number[];
  return typeof only === 'string' ? only : { ids: only };
}

export function stopStrings(stop: string | string[] | null | undefined): string[] {
  if (stop === undefined || stop === null) return [];
  return typeof stop === 'string' ? [stop] : stop;
}
