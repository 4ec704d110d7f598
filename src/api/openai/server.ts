/**
 * The device's OpenAI-compatible HTTP API: POST /v1/chat/completions and /v1/completions (whole answers, or
 * `stream: true` as server-sent events in OpenAI's chunk format ending with `data: [DONE]`), GET /v1/models and
 * GET /health. Built on Hono (routing, SSE) over @hono/node-server. Prompts are tokenized and generated here, on
 * the device; only hidden states reach the cloud.
 *
 * Every answer carries HAT's own figures in an extension field, `hat` (the response, or the streamed chunk that
 * carries finish_reason). A client that disconnects aborts its request's signal: the generation stops after the
 * current round and its cloud session is closed.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { HatError } from '../../errors.ts';
import type { GenerateOptions, GenerationResult, HatDevice, PreparedRequest, Prompt } from '../hat-device.ts';
import { ApiError, fromError, fromZodError } from './errors.ts';
import {
  chatRequestSchema,
  checkSupported,
  completionPrompt,
  completionRequestSchema,
  messageText,
  stopStrings,
  type ChatRequest,
  type CompletionRequest,
} from './schemas.ts';

export interface OpenAIServerOptions {
  /** Address to listen on (default 127.0.0.1: loopback only). */
  host?: string;
  /** TCP port (default 8080; 0 picks a free one). */
  port?: number;
  /** Largest request body (default 4 MiB). */
  maxBodyBytes?: number;
}

export interface OpenAIServer {
  /** The API's base URL, e.g. http://127.0.0.1:8080/v1, what an OpenAI client's baseURL takes. */
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

type Kind = 'chat' | 'completion';

/** HAT's figures for one generation, snake_case like the rest of the body. */
export function hatExtension(result: GenerationResult): Record<string, unknown> {
  const m = result.metrics;
  return {
    queued_ms: round(result.queuedMs),
    connect_ms: round(result.connectMs),
    ...(m
      ? {
          ttft_ms: round(m.ttftMs),
          tbt_ms: m.tbtMs,
          rounds: m.rounds,
          tokens_per_round: m.tokensPerRound,
          bytes_up: m.bytesUp,
          bytes_down: m.bytesDown,
          cloud_compute_ms: round(m.cloudComputeMs),
          ...(m.reconnects ? { reconnects: m.reconnects } : {}),
          ...(m.fallback ? { fallback: m.fallback } : {}),
        }
      : {}),
  };
}

const round = (x: number) => Number(x.toFixed(3));

function usage(result: GenerationResult) {
  return {
    prompt_tokens: result.promptTokens,
    completion_tokens: result.completionTokens,
    total_tokens: result.promptTokens + result.completionTokens,
  };
}

async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ApiError(
      400,
      `We could not parse the JSON body of your request (${(error as Error).message}).` +
        ' The body must be a JSON object.',
      { code: 'invalid_json' },
    );
  }
}

function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError(400, 'The request body must be a JSON object.', { code: 'invalid_json' });
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw fromZodError(parsed.error, body);
  return parsed.data;
}

function errorResponse(c: Context, error: ApiError): Response {
  return c.json(error.body, error.status as 400, error.headers);
}

/** The Hono app alone (tests can call `app.request`). */
export function openAIApp(device: HatDevice, options: Pick<OpenAIServerOptions, 'maxBodyBytes'> = {}): Hono {
  const app = new Hono();
  const created = Math.floor(Date.now() / 1000);
  const model = { id: device.modelId, object: 'model', created, owned_by: 'hat' };

  app.use(
    '/v1/*',
    bodyLimit({
      maxSize: options.maxBodyBytes ?? 4 << 20,
      onError: (c) =>
        errorResponse(c, new ApiError(413, 'The request body is too large.', { code: 'request_too_large' })),
    }),
  );

  app.get('/health', (c) => c.json({ status: 'ok', model: device.modelId, ...device.load }));
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [model] }));
  app.get('/v1/models/:id', (c) =>
    c.req.param('id') === device.modelId ? c.json(model) : errorResponse(c, unknownModel(device, c.req.param('id'))),
  );

  app.post('/v1/chat/completions', async (c) => {
    const request = parseBody(chatRequestSchema, await readJson(c));
    checkRequest(device, request);
    if (request.messages.length === 0) {
      throw new ApiError(400, "'messages' must contain at least one message.", {
        param: 'messages',
        code: 'empty_array',
      });
    }
    const messages = request.messages.map((m, i) => ({
      role: m.role,
      content: messageText(m.content, i),
      ...(m.name ? { name: m.name } : {}),
    }));
    const maxParam =
      request.max_completion_tokens != null
        ? 'max_completion_tokens'
        : request.max_tokens != null
          ? 'max_tokens'
          : undefined;
    return generate(
      c,
      device,
      'chat',
      request,
      { messages },
      {
        maxTokens: request.max_completion_tokens ?? request.max_tokens ?? undefined,
      },
      { prompt: 'messages', budget: maxParam },
    );
  });

  app.post('/v1/completions', async (c) => {
    const request = parseBody(completionRequestSchema, await readJson(c));
    checkRequest(device, request);
    const maxParam = request.max_tokens != null ? 'max_tokens' : undefined;
    return generate(
      c,
      device,
      'completion',
      request,
      completionPrompt(request.prompt),
      {
        maxTokens: request.max_tokens ?? undefined,
      },
      { prompt: 'prompt', budget: maxParam },
    );
  });

  app.notFound((c) =>
    errorResponse(c, new ApiError(404, `Unknown request URL: ${c.req.method} ${c.req.path}.`, { code: 'unknown_url' })),
  );
  app.onError((error, c) => errorResponse(c, fromError(error, 'prompt')));
  return app;
}

function unknownModel(device: HatDevice, id: string): ApiError {
  return new ApiError(404, `The model '${id}' does not exist: this device serves '${device.modelId}'.`, {
    param: 'model',
    code: 'model_not_found',
  });
}

function checkRequest(device: HatDevice, request: ChatRequest | CompletionRequest): void {
  if (request.model !== device.modelId) throw unknownModel(device, request.model);
  checkSupported(request);
}

async function generate(
  c: Context,
  device: HatDevice,
  kind: Kind,
  request: ChatRequest | CompletionRequest,
  prompt: Prompt,
  budget: Pick<GenerateOptions, 'maxTokens'>,
  params: { prompt: string; budget?: string },
): Promise<Response> {
  const options: GenerateOptions = {
    ...budget,
    // OpenAI's defaults: temperature 1, top_p 1; temperature 0 is greedy.
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    // Seeds are taken modulo 2^32 (the device's PRNG seed).
    seed: request.seed == null ? undefined : Number(BigInt.asUintN(32, BigInt(request.seed))),
    stop: stopStrings(request.stop),
    signal: c.req.raw.signal,
  };
  let pieces: AsyncGenerator<string, GenerationResult, void>;
  let first: IteratorResult<string, GenerationResult>;
  try {
    // Checked before queueing, so a request the model cannot take is refused at once: first the prompt alone
    // (its errors name the prompt), then the token budget on top of it.
    const { promptIds } = device.prepare(prompt, { stop: options.stop });
    let prepared: PreparedRequest;
    try {
      prepared = device.prepare({ ids: promptIds }, options);
    } catch (error) {
      throw fromError(error, params.budget ?? params.prompt);
    }
    // The caller's budget as given: without one, the device fits it to the model's and the cloud's context.
    pieces = device.stream({ ids: prepared.promptIds }, options);
    // Queueing, the cloud connection and the prompt happen before the first piece: their errors get a status.
    first = await pieces.next();
  } catch (error) {
    return errorResponse(c, fromError(error, params.prompt));
  }
  const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
  const head = {
    id,
    object: kind === 'chat' ? 'chat.completion' : 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model: device.modelId,
  };
  if (!request.stream) {
    let text = '';
    let next = first;
    try {
      while (!next.done) {
        text += next.value;
        next = await pieces.next();
      }
    } catch (error) {
      return errorResponse(c, fromError(error, params.prompt));
    }
    const result = next.value;
    const finish_reason = finishReason(result);
    const choice =
      kind === 'chat'
        ? {
            index: 0,
            message: { role: 'assistant', content: result.text, refusal: null },
            logprobs: null,
            finish_reason,
          }
        : { index: 0, text: result.text, logprobs: null, finish_reason };
    return c.json({ ...head, choices: [choice], usage: usage(result), hat: hatExtension(result) });
  }
  return streamAnswer(c, kind, head, first, pieces, request.stream_options?.include_usage === true);
}

/** OpenAI has no 'cancelled': a cancelled request's client is gone, so what it would read matters little. */
function finishReason(result: GenerationResult): 'stop' | 'length' {
  return result.finishReason === 'length' ? 'length' : 'stop';
}

function streamAnswer(
  c: Context,
  kind: Kind,
  head: { id: string; object: string; created: number; model: string },
  first: IteratorResult<string, GenerationResult>,
  pieces: AsyncGenerator<string, GenerationResult, void>,
  includeUsage: boolean,
): Response {
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const extra = includeUsage ? { usage: null } : {};
  const chunk = (text: string | undefined, finish: 'stop' | 'length' | null, role = false) => {
    const delta = { ...(role ? { role: 'assistant' } : {}), ...(text !== undefined ? { content: text } : {}) };
    const choice =
      kind === 'chat'
        ? { index: 0, delta, logprobs: null, finish_reason: finish }
        : { index: 0, text: text ?? '', logprobs: null, finish_reason: finish };
    return { ...head, object, choices: [choice], ...extra };
  };
  return streamSSE(
    c,
    async (sse) => {
      const send = (data: unknown) => sse.writeSSE({ data: JSON.stringify(data) });
      if (kind === 'chat') await send(chunk('', null, true));
      let next = first;
      try {
        while (!next.done) {
          if (next.value) await send(chunk(next.value, null));
          next = await pieces.next();
        }
      } catch (error) {
        // Headers are sent: the error goes in the stream, as OpenAI's API does; the client's SDK raises it.
        await send(fromError(error, kind === 'chat' ? 'messages' : 'prompt').body);
        return;
      }
      const result = next.value;
      if (result.finishReason === 'cancelled') return;
      await send({ ...chunk(undefined, finishReason(result)), hat: hatExtension(result) });
      if (includeUsage) await send({ ...head, object, choices: [], usage: usage(result), hat: hatExtension(result) });
      await sse.writeSSE({ data: '[DONE]' });
    },
    async (error) => {
      // Writing to a client that has gone away: the request's signal has already stopped the generation.
      await pieces.return(undefined as never).catch(() => undefined);
      void error;
    },
  );
}

/** Serves the API for `device` until `close()`; resolves once it listens. */
export async function serveOpenAI(device: HatDevice, options: OpenAIServerOptions = {}): Promise<OpenAIServer> {
  const app = openAIApp(device, options);
  const hostname = options.host ?? '127.0.0.1';
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname, port: options.port ?? 8080 }, () => resolve(s));
    s.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new HatError(
          'NETWORK',
          `cannot listen on ${hostname}:${options.port ?? 8080}: ${error.message}`,
          'pick another port with --serve HOST:PORT',
        ),
      ),
    );
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = hostname.includes(':') ? `[${hostname}]` : hostname;
  return {
    url: `http://${urlHost}:${port}/v1`,
    host: hostname,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
