/**
 * The JSON bodies of control frames (hello, welcome, error), validated with one schema on both sides, and the
 * codes error frames may carry — a subset of the one error table (src/errors.ts), so a code sent by the cloud
 * arrives at the device as the same HatError code, with its retryable flag.
 */
import { z } from 'zod';
import { HatError, isHatError, type ErrorCode } from '../../errors.ts';

export const WIRE_ERROR_CODES = [
  'BAD_FRAME',
  'MANIFEST_MISMATCH',
  'UNAUTHORIZED',
  'RATE_LIMITED',
  'SESSION_LIMIT',
  'CONTEXT_LIMIT',
  'IDLE_TIMEOUT',
  'RUN_FAILED',
  'GOING_AWAY',
] as const satisfies readonly ErrorCode[];
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

export const helloSchema = z.object({
  manifestHash: z.string().max(128),
  token: z.string().max(4096).optional(),
  client: z.string().max(256).optional(),
  /** Protocol extensions the device understands; 'rows-advice': results may carry advisedRows. */
  features: z.array(z.string().max(64)).max(16).optional(),
});
export type Hello = z.infer<typeof helloSchema>;

/** The hello feature that lets the cloud advise how many rows a verification should carry (advisedRows). */
export const ROWS_ADVICE = 'rows-advice';

/** The welcome feature that lets the device say, on each prefill chunk, the rows its prompt has left (promptRows). */
export const PROMPT_ROWS = 'prompt-rows';

export const welcomeSchema = z.object({
  sessionId: z.number().int().positive(),
  hiddenSize: z.number().int().positive(),
  maxTokensPerFrame: z.number().int().positive(),
  /** Largest cache a session may grow to on this server. */
  maxContext: z.number().int().positive().optional(),
  latencyModel: z.object({ baseMs: z.number(), perTokenMs: z.number() }),
  /**
   * How often the server pings the session (absent from older servers): a device that hears nothing at all for a
   * few of these takes the link for dead (cloud-client.ts), even when no FIN or RST ever comes.
   */
  keepaliveMs: z.number().int().positive().optional(),
  /** Protocol extensions the cloud accepts from the device (absent from older servers): 'prompt-rows'. */
  features: z.array(z.string().max(64)).max(16).optional(),
});
export type Welcome = z.infer<typeof welcomeSchema>;

/** The longest error message a frame carries: a peer refuses a longer one as a protocol break. */
export const ERROR_MESSAGE_MAX = 4096;

export const errorBodySchema = z.object({
  code: z.enum(WIRE_ERROR_CODES),
  message: z.string().max(ERROR_MESSAGE_MAX),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/** An error frame's body, its message cut to what the schema takes (a long one would turn any code into PROTOCOL). */
export function errorBody(code: WireErrorCode, message: string): ErrorBody {
  return {
    code,
    message: message.length > ERROR_MESSAGE_MAX ? `${message.slice(0, ERROR_MESSAGE_MAX - 1)}…` : message,
  };
}

const HINTS: Partial<Record<WireErrorCode, string>> = {
  MANIFEST_MISMATCH: 'device and cloud must hold parts of the same split',
  UNAUTHORIZED: "give the server's token (HAT_TOKEN or --token-file)",
  RATE_LIMITED: 'wait, then retry with the right token',
  SESSION_LIMIT: 'the server is full: retry later or add a replica',
  CONTEXT_LIMIT: 'shorten the prompt or --max-new-tokens',
};

/** Validates a control body against its schema; a peer that sends something else breaks the protocol. */
export function parseControl<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HatError(
      'PROTOCOL',
      `${what} body is invalid: ${issue.path.join('.') || 'body'}: ${issue.message}`,
      'the peer speaks a different or broken hat protocol',
    );
  }
  return parsed.data;
}

/** An error frame's body as the device's HatError: same code (and so the same retryable flag). */
export function errorFromBody(body: ErrorBody): HatError {
  return new HatError(
    body.code,
    `the cloud closed the session: ${body.code}: ${body.message}`,
    HINTS[body.code] ?? 'see the server log',
  );
}

const CLOUD_CODES = new Set<ErrorCode>(['NETWORK', ...WIRE_ERROR_CODES]);

/** The cloud (or the way to it) failed, as opposed to a bug or bad input on the device. */
export function isCloudFailure(error: unknown): error is HatError {
  return isHatError(error) && CLOUD_CODES.has(error.code);
}
