/**
 * The one error type of hat. Core code throws it; the CLI's single handler (src/cli.ts) prints
 * `error[code]: message` plus the hint on one line and exits non-zero. Nothing else exits.
 */
/**
 * Every error code, with whether trying again (a new cloud session, possibly on another replica) can help. The
 * wire codes are the ones serve-cloud sends in error frames; they travel worker → pool → server → wire → device
 * unchanged (WIRE_ERROR_CODES in src/runtime/protocol/control.ts).
 */
export const ERROR_TABLE = {
  BAD_OPTION: { description: 'an option failed validation', retryable: false },
  FILE_NOT_FOUND: { description: 'an input file does not exist', retryable: false },
  BAD_MODEL: { description: 'the file is not a readable ONNX model', retryable: false },
  NOT_A_DECODER: { description: 'the model is not a decoder with a KV cache', retryable: false },
  UNSUPPORTED_MODEL: { description: 'the model uses a construct hat cannot handle', retryable: false },
  MISSING_EXTERNAL_DATA: {
    description: 'an external-data file the model references is missing or short',
    retryable: false,
  },
  BAD_SPLIT: { description: 'the requested split cannot be made', retryable: false },
  OUTPUT_EXISTS: { description: 'the output location cannot be written', retryable: false },
  BAD_MANIFEST: { description: 'a split directory or manifest is missing or invalid', retryable: false },
  RUNTIME: { description: 'onnxruntime failed to load or run a model', retryable: false },
  BAD_CHECKPOINT: { description: 'a checkpoint or tokenizer file is invalid', retryable: false },
  NETWORK: { description: 'a network connection failed', retryable: true },
  PROTOCOL: { description: 'a peer sent a frame that breaks the protocol', retryable: false },
  BUSY: { description: 'the device is generating and its request queue is full', retryable: true },
  CONTEXT_LENGTH: {
    description: "the prompt and the tokens asked for do not fit the model's context",
    retryable: false,
  },
  NO_CHAT_TEMPLATE: { description: 'the model has no chat template', retryable: false },
  // Sent by serve-cloud in error frames (the wire codes).
  BAD_FRAME: { description: 'the cloud refused a malformed or out-of-limit frame', retryable: false },
  MANIFEST_MISMATCH: { description: 'device and cloud hold parts of different splits', retryable: false },
  UNAUTHORIZED: { description: 'the cloud refused the token', retryable: false },
  RATE_LIMITED: { description: 'too many failed attempts from this address', retryable: false },
  SESSION_LIMIT: { description: 'the cloud holds its maximum of sessions', retryable: true },
  CONTEXT_LIMIT: {
    description: 'the session would outgrow the context or KV memory the cloud allows',
    retryable: false,
  },
  IDLE_TIMEOUT: { description: 'the cloud closed a session that sent nothing for too long', retryable: true },
  RUN_FAILED: { description: 'the middle part failed to run', retryable: false },
  GOING_AWAY: { description: 'the cloud is draining or shutting down', retryable: true },
  INTERNAL: { description: 'a bug in hat', retryable: false },
} as const satisfies Record<string, { description: string; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** The code table as descriptions (help texts, docs). */
export const ERROR_CODES = Object.fromEntries(
  Object.entries(ERROR_TABLE).map(([code, e]) => [code, e.description]),
) as Record<ErrorCode, string>;

/** The error's code when it is a HatError, else `fallback` (an error from a library, crossing a thread). */
export function codeOf(error: unknown, fallback: ErrorCode): ErrorCode {
  return isHatError(error) ? error.code : fallback;
}

/** Whether a new attempt (another session, another replica) can succeed where this failed. */
export function isRetryable(error: unknown): boolean {
  return isHatError(error) && ERROR_TABLE[error.code].retryable;
}

/**
 * An error as plain data, to cross a thread, a process or a socket: a structured clone keeps an Error's message but
 * not a HatError's code and hint, and a code lost on the way turns a refusal into INTERNAL or NETWORK.
 */
export interface ErrorData {
  message: string;
  code?: ErrorCode;
  hint?: string;
}

export function errorData(error: unknown): ErrorData {
  if (isHatError(error)) return { message: error.message, code: error.code, hint: error.hint };
  return { message: error instanceof Error ? error.message : String(error) };
}

/** The HatError `data` describes: its own code where it carried a known one, else `fallback`; `where` prefixes it. */
export function errorFromData(data: ErrorData, fallback: ErrorCode, where = ''): HatError {
  const code = data.code !== undefined && Object.hasOwn(ERROR_TABLE, data.code) ? data.code : fallback;
  return new HatError(code, `${where}${data.message}`, data.hint);
}

export class HatError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HatError';
    this.code = code;
    this.hint = hint;
  }
}

export function isHatError(error: unknown): error is HatError {
  return error instanceof HatError;
}

/** One line, as the CLI prints it: the problem, then what to do. */
export function formatError(error: unknown): string {
  if (isHatError(error)) {
    return `error[${error.code}]: ${error.message}${error.hint ? ` — ${error.hint}` : ''}`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `error[INTERNAL]: ${message.split('\n')[0]} — please report this with the command you ran`;
}
