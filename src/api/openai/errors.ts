/**
 * Errors in OpenAI's format, `{ error: { message, type, param, code } }`, with the HTTP status OpenAI's clients
 * map to their error classes (400 BadRequestError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError)
 * and the headers their retry logic reads (retry-after, x-should-retry).
 */
import type { z } from 'zod';
import { isHatError, isRetryable, type ErrorCode } from '../../errors.ts';

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export interface ApiErrorOptions {
  type?: string;
  param?: string | null;
  code?: string | null;
  headers?: Record<string, string>;
}

/** An error a handler answers with; anything else thrown becomes a 500. */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = options.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  get body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** `['messages', 0, 'content']` → `messages[0].content`, as OpenAI names parameters. */
export function paramName(path: readonly PropertyKey[]): string {
  return path.reduce<string>((name, key) => {
    if (typeof key === 'number') return `${name}[${key}]`;
    return name ? `${name}.${String(key)}` : String(key);
  }, '');
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let value = body;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** The first problem zod found in a request body, as OpenAI reports it. */
export function fromZodError(error: z.ZodError, body: unknown): ApiError {
  const issue = error.issues[0];
  const param = paramName(issue.path);
  if (issue.code === 'invalid_type' && valueAt(body, issue.path) === undefined) {
    return new ApiError(400, `Missing required parameter: '${param}'.`, { param, code: 'missing_required_parameter' });
  }
  const code = issue.code === 'invalid_type' || issue.code === 'invalid_union' ? 'invalid_type' : 'invalid_value';
  const what = code === 'invalid_type' ? 'type' : 'value';
  const detail = issue.message.replace(/^Invalid input: /, '');
  return new ApiError(400, `Invalid ${what} for '${param}': ${detail}.`, { param: param || null, code });
}

/**
 * Cloud codes that mean the device and the cloud are set up for each other wrongly (token, split, the lockout a
 * wrong token earns): no retry can succeed until someone changes a configuration.
 */
const MISCONFIGURED = new Set<ErrorCode>(['UNAUTHORIZED', 'MANIFEST_MISMATCH', 'RATE_LIMITED']);

/** How long a client should wait before retrying what a full, draining or restarting cloud refused. */
const RETRY_AFTER_S = '1';

/**
 * A HatError from the device, as an HTTP answer (`param`: the request field it concerns):
 * - a request the model cannot take is the client's: 400 (CONTEXT_LENGTH, and the cloud's CONTEXT_LIMIT, as
 *   OpenAI's context_length_exceeded);
 * - a full request queue is 429 with Retry-After;
 * - an unreachable or lost cloud (NETWORK) and every code ERROR_TABLE calls retryable (SESSION_LIMIT,
 *   GOING_AWAY, IDLE_TIMEOUT: the cloud is full, draining or dropped an idle session) are 503 with Retry-After
 *   and the one-line reason;
 * - a cloud that refuses this device's configuration (MISCONFIGURED) is 502: the device is a gateway whose
 *   upstream refused it, which no client can fix. The openai SDKs retry every 5xx (twice by default) unless the
 *   answer says `x-should-retry: false`, so it says that — as does every other non-retryable HatError's 500;
 * - the rest is 500.
 */
export function fromError(error: unknown, param: string): ApiError {
  if (error instanceof ApiError) return error;
  if (!isHatError(error)) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    return new ApiError(500, `internal error: ${message}`, { code: 'internal_error' });
  }
  const line = `${error.message}${error.hint ? ` — ${error.hint}` : ''}`;
  const code = error.code.toLowerCase();
  switch (error.code) {
    case 'BAD_OPTION':
      return new ApiError(400, line, { param, code });
    case 'CONTEXT_LENGTH':
    case 'CONTEXT_LIMIT':
      return new ApiError(400, line, { param, code: 'context_length_exceeded' });
    case 'NO_CHAT_TEMPLATE':
      return new ApiError(400, line, { param: 'messages', code: 'chat_template_missing' });
    case 'BUSY':
      return new ApiError(429, line, {
        type: 'rate_limit_error',
        code: 'queue_full',
        headers: { 'retry-after': RETRY_AFTER_S },
      });
    case 'NETWORK':
      return new ApiError(503, line, {
        type: 'service_unavailable_error',
        code: 'cloud_unreachable',
        headers: { 'retry-after': RETRY_AFTER_S },
      });
  }
  if (isRetryable(error)) {
    return new ApiError(503, `error[${error.code}]: ${line}`, {
      type: 'service_unavailable_error',
      code,
      headers: { 'retry-after': RETRY_AFTER_S },
    });
  }
  const noRetry = { 'x-should-retry': 'false' };
  if (MISCONFIGURED.has(error.code)) {
    return new ApiError(502, `error[${error.code}]: ${line}`, { code, headers: noRetry });
  }
  return new ApiError(500, `error[${error.code}]: ${line}`, { code, headers: noRetry });
}
