/**
 * serve-cloud's network side: an HTTP server with health/readiness endpoints and a WebSocket endpoint, one
 * connection per device session. Every frame is validated; a bad one gets an error frame and closes that
 * session only. Sessions expire when idle and are limited in number.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomInt, timingSafeEqual, createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { z } from 'zod';
import { HatError, isHatError } from '../../errors.ts';
import { decodeFrame, decodeJson, encodeFrame, encodeJson, FrameFlags, HEADER_BYTES, type Frame } from '../protocol/frame.ts';
import { decodeHidden, encodeHidden } from '../protocol/hidden-codec.ts';
import type { MiddleExecutor } from './executor.ts';
import type { Logger } from './logger.ts';
import { EmulatedLink, type LinkSpec } from '../link.ts';
import type { CloudMetrics, RequestKind } from './cloud-metrics.ts';

export interface CloudServerOptions {
  host: string;
  port: number;
  /** Shared secret the device must present; undefined accepts any device holding the same split. */
  token?: string;
  maxSessions: number;
  idleTimeoutMs: number;
  maxTokensPerFrame: number;
  manifestHash: string;
  hiddenSize: number;
  executor: MiddleExecutor;
  logger: Logger;
  /** EMULATED link per session (uplink delays received frames, downlink delays sent ones); omit on real networks. */
  link?: LinkSpec;
  /** Prometheus metrics, served on /metrics (cloud-metrics.ts); omitted: no /metrics. */
  metrics?: CloudMetrics;
}

export const helloSchema = z.object({
  manifestHash: z.string(),
  token: z.string().optional(),
  client: z.string().optional(),
});

export type ErrorFrameCode = 'BAD_FRAME' | 'MANIFEST_MISMATCH' | 'UNAUTHORIZED' | 'SESSION_LIMIT' | 'IDLE_TIMEOUT' | 'RUN_FAILED' | 'SHUTDOWN';

interface DeviceSession {
  id: number;
  socket: WebSocket;
  link?: EmulatedLink;
  nextSeqIn: number;
  nextSeqOut: number;
  lastActive: number;
  closed: boolean;
}

function sameSecret(a: string, b: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(a), digest(b));
}

export class CloudServer {
  private readonly options: CloudServerOptions;
  private readonly sessions = new Map<number, DeviceSession>();
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private idleTimer?: NodeJS.Timeout;
  private readonly maxPayloadBytes: number;

  constructor(options: CloudServerOptions) {
    this.options = options;
    this.maxPayloadBytes = options.maxTokensPerFrame * options.hiddenSize * 4 + 1024;
    this.http = createServer((req, res) => this.handleHttp(req, res));
    this.wss = new WebSocketServer({ server: this.http, perMessageDeflate: false, maxPayload: this.maxPayloadBytes + HEADER_BYTES });
    this.wss.on('connection', (socket) => this.accept(socket));
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  async start(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', (error: NodeJS.ErrnoException) => reject(new HatError('NETWORK',
        `cannot listen on ${this.options.host}:${this.options.port} (${error.code ?? error.message})`,
        error.code === 'EADDRINUSE' ? 'pick another --port or stop the process using it' : 'check --host and --port')));
      this.http.listen(this.options.port, this.options.host, () => resolve());
    });
    const checkEvery = Math.max(50, Math.min(5000, this.options.idleTimeoutMs / 4));
    this.idleTimer = setInterval(() => this.expireIdle(), checkEvery).unref();
    const address = this.http.address() as AddressInfo;
    this.options.logger.log('listening', { host: address.address, port: address.port, maxSessions: this.options.maxSessions });
    return { host: address.address, port: address.port };
  }

  async stop(): Promise<void> {
    clearInterval(this.idleTimer);
    for (const session of this.sessions.values()) this.fail(session, 'SHUTDOWN', 'the server is shutting down');
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections?.();
    await this.options.executor.close();
    this.options.logger.log('stopped');
  }

  private handleHttp(req: IncomingMessage, res: ServerResponse): void {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/health' || path === '/v2/health/live') {
      reply(200, { status: 'live', sessions: this.sessions.size, pending: this.options.executor.pending });
    } else if (path === '/ready' || path === '/v2/health/ready') {
      const ready = this.options.executor.ready && this.sessions.size < this.options.maxSessions;
      reply(ready ? 200 : 503, { ready, sessions: this.sessions.size, maxSessions: this.options.maxSessions, latencyModel: this.options.executor.latencyModel() });
    } else if (path === '/metrics' && this.options.metrics) {
      const { metrics } = this.options;
      metrics.render().then((text) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(text);
      }, (error: unknown) => reply(500, { error: String(error) }));
    } else {
      const endpoints = ['/health', '/ready', ...(this.options.metrics ? ['/metrics'] : []), 'ws://…/ (hat protocol v1)'];
      reply(404, { error: 'not found', endpoints });
    }
  }

  private newSessionId(): number {
    let id: number;
    do id = randomInt(1, 2 ** 31); while (this.sessions.has(id));
    return id;
  }

  private accept(socket: WebSocket): void {
    let session: DeviceSession | undefined;
    const link = this.options.link ? new EmulatedLink(this.options.link) : undefined;
    const helloTimeout = setTimeout(() => {
      if (!session) this.reject(socket, 'BAD_FRAME', 'no hello within 10 s');
    }, 10_000);
    socket.on('message', (data: RawData, isBinary: boolean) => {
      if (link) link.up.send(rawLength(data), () => handle(data, isBinary));
      else handle(data, isBinary);
    });
    const handle = (data: RawData, isBinary: boolean) => {
      if (session?.closed) return;
      try {
        if (!isBinary) throw new HatError('PROTOCOL', 'text message received; hat frames are binary');
        const frame = decodeFrame(toBytes(data), { maxPayloadBytes: this.maxPayloadBytes });
        if (!session) {
          clearTimeout(helloTimeout);
          session = this.handshake(socket, frame, link);
        } else {
          this.handleFrame(session, frame);
        }
      } catch (error) {
        const message = isHatError(error) ? error.message : String(error);
        if (session) this.fail(session, 'BAD_FRAME', message);
        else this.reject(socket, 'BAD_FRAME', message);
      }
    };
    socket.on('close', () => {
      clearTimeout(helloTimeout);
      if (session) this.forget(session, 'closed by device');
    });
    socket.on('error', () => socket.terminate());
  }

  private handshake(socket: WebSocket, frame: Frame, link?: EmulatedLink): DeviceSession | undefined {
    if (frame.header.type !== 'hello' || frame.header.seq !== 0) {
      throw new HatError('PROTOCOL', `expected hello with seq 0, got ${frame.header.type} seq ${frame.header.seq}`);
    }
    const parsed = helloSchema.safeParse(decodeJson(frame.payload));
    if (!parsed.success) throw new HatError('PROTOCOL', `hello payload is invalid: ${parsed.error.issues[0].message}`);
    const hello = parsed.data;
    if (hello.manifestHash !== this.options.manifestHash) {
      this.reject(socket, 'MANIFEST_MISMATCH', `device split ${hello.manifestHash.slice(0, 12)} differs from the cloud's ${this.options.manifestHash.slice(0, 12)}`);
      return undefined;
    }
    if (this.options.token !== undefined && (hello.token === undefined || !sameSecret(hello.token, this.options.token))) {
      this.reject(socket, 'UNAUTHORIZED', 'missing or wrong token');
      return undefined;
    }
    if (this.sessions.size >= this.options.maxSessions) {
      this.reject(socket, 'SESSION_LIMIT', `the server holds its maximum of ${this.options.maxSessions} sessions`);
      return undefined;
    }
    const session: DeviceSession = { id: this.newSessionId(), socket, link, nextSeqIn: 1, nextSeqOut: 0, lastActive: Date.now(), closed: false };
    this.sessions.set(session.id, session);
    this.options.metrics?.sessionOpened(session.id);
    this.send(session, encodeFrame({ type: 'welcome', sessionId: session.id, seq: session.nextSeqOut++ }, encodeJson({
      sessionId: session.id,
      hiddenSize: this.options.hiddenSize,
      maxTokensPerFrame: this.options.maxTokensPerFrame,
      latencyModel: this.options.executor.latencyModel(),
    })));
    this.options.logger.log('session-open', { session: session.id, client: hello.client, sessions: this.sessions.size });
    return session;
  }

  private handleFrame(session: DeviceSession, frame: Frame): void {
    const { header } = frame;
    session.lastActive = Date.now();
    if (header.sessionId !== session.id) throw new HatError('PROTOCOL', `unknown session ${header.sessionId} on this connection`);
    if (header.seq !== session.nextSeqIn) throw new HatError('PROTOCOL', `out-of-order frame: seq ${header.seq}, expected ${session.nextSeqIn}`);
    session.nextSeqIn++;
    if (header.type === 'bye') {
      session.socket.close(1000, 'bye');
      return;
    }
    if (header.type !== 'forward') throw new HatError('PROTOCOL', `a device may not send ${header.type} frames after the handshake`);
    if (header.hiddenSize !== this.options.hiddenSize) {
      throw new HatError('PROTOCOL', `hidden size ${header.hiddenSize} does not match the middle part's ${this.options.hiddenSize}`);
    }
    if (header.nTokens < 1 || header.nTokens > this.options.maxTokensPerFrame) {
      throw new HatError('PROTOCOL', `a forward frame must carry 1..${this.options.maxTokensPerFrame} tokens, got ${header.nTokens}`);
    }
    const hidden = decodeHidden(frame.payload, header.nTokens, header.hiddenSize, header.dtype);
    const allPositions = (header.flags & FrameFlags.allPositions) !== 0;
    const kind: RequestKind = (header.flags & FrameFlags.prefill) !== 0 ? 'prefill_chunk' : 'verification';
    this.options.metrics?.request(kind);
    this.options.executor
      .run({ sessionId: session.id, pastLength: header.pastLength, nTokens: header.nTokens, hidden, allPositions })
      .then((result) => {
        if (session.closed) return;
        this.options.metrics?.answered(session.id, kind, result.queueMs, header.pastLength + header.nTokens);
        const model = this.options.executor.latencyModel();
        this.send(session, encodeFrame({
          type: 'result', flags: header.flags, dtype: header.dtype, sessionId: session.id, seq: session.nextSeqOut++,
          pastLength: header.pastLength, nTokens: result.rows, hiddenSize: header.hiddenSize,
          queueMs: result.queueMs, computeMs: result.computeMs, latencyBaseMs: model.baseMs, latencyPerTokenMs: model.perTokenMs,
        }, encodeHidden(result.hidden, result.rows, header.hiddenSize, header.dtype)));
      })
      .catch((error: unknown) => this.fail(session, 'RUN_FAILED', isHatError(error) ? error.message : String(error)));
  }

  private send(session: DeviceSession, bytes: Uint8Array): void {
    if (session.closed) return;
    const deliver = () => { if (session.socket.readyState === session.socket.OPEN) session.socket.send(bytes, { binary: true }); };
    if (session.link) session.link.down.send(bytes.length, deliver);
    else deliver();
  }

  private reject(socket: WebSocket, code: ErrorFrameCode, message: string): void {
    this.options.logger.log('rejected', { code, message });
    this.options.metrics?.error(code);
    socket.send(encodeFrame({ type: 'error' }, encodeJson({ code, message })), { binary: true }, () => socket.close(1008, code));
  }

  /** Sends an error frame and closes this session only. */
  private fail(session: DeviceSession, code: ErrorFrameCode, message: string): void {
    if (session.closed) return;
    this.options.logger.log('session-error', { session: session.id, code, message });
    this.options.metrics?.error(code);
    this.send(session, encodeFrame({ type: 'error', sessionId: session.id, seq: session.nextSeqOut++ }, encodeJson({ code, message })));
    this.forget(session, code);
    session.socket.close(code === 'SHUTDOWN' ? 1001 : 1008, code);
  }

  private forget(session: DeviceSession, reason: string): void {
    if (session.closed) return;
    session.closed = true;
    this.sessions.delete(session.id);
    this.options.metrics?.sessionClosed(session.id);
    this.options.executor.drop(session.id);
    this.options.logger.log('session-close', { session: session.id, reason, sessions: this.sessions.size });
  }

  private expireIdle(): void {
    const now = Date.now();
    for (const session of this.sessions.values()) {
      if (now - session.lastActive > this.options.idleTimeoutMs) this.fail(session, 'IDLE_TIMEOUT', `no frame for ${this.options.idleTimeoutMs} ms`);
    }
  }
}

function rawLength(data: RawData): number {
  return Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
