/**
 * The one error type of hat. Core code throws it; the CLI's single handler (src/cli.ts) prints
 * `error[code]: message` plus the hint on one line and exits non-zero. Nothing else exits.
 */
export const ERROR_CODES = {
  BAD_OPTION: 'an option failed validation',
  FILE_NOT_FOUND: 'an input file does not exist',
  BAD_MODEL: 'the file is not a readable ONNX model',
  NOT_A_DECODER: 'the model is not a decoder with a KV cache',
  UNSUPPORTED_MODEL: 'the model uses a construct hat cannot handle',
  MISSING_EXTERNAL_DATA: 'an external-data file the model references is missing or short',
  BAD_SPLIT: 'the requested split cannot be made',
  OUTPUT_EXISTS: 'the output location cannot be written',
  BAD_MANIFEST: 'a split directory or manifest is missing or invalid',
  RUNTIME: 'onnxruntime failed to load or run a model',
  BAD_CHECKPOINT: 'a checkpoint or tokenizer file is invalid',
  NETWORK: 'a network connection failed',
  PROTOCOL: 'a peer sent a frame that breaks the protocol',
  BUSY: 'the device is generating and its request queue is full',
  CONTEXT_LENGTH: 'the prompt and the tokens asked for do not fit the model\'s context',
  NO_CHAT_TEMPLATE: 'the model has no chat template',
  INTERNAL: 'a bug in hat',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

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
