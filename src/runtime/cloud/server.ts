/**
 * serve-cloud's network side: an HTTP server with health/readiness endpoints and a WebSocket endpoint, one
 * connection per device session. Every frame is validated; a bad one gets an error frame and closes that
 * session only. Defences, each bounded: a connection cap, an upgrade deadline and failed attempts rate-limited per
 * address (connection-guard.ts), a hello deadline (sockets destroyed on expiry), a tiny message limit until the hello
 * is accepted, the token checked before anything is revealed, a bound on requests in flight per session (its socket
 * is paused past it) and on bytes queued to a slow reader, keepalive pings, idle expiry only when nothing is
 * queued, and a drain that lets in-flight rounds finish and tells devices to go away (they resume elsewhere).
 * The plain HTTP answers (health, readiness, /metrics) are http-endpoints.ts's.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomInt, timingSafeEqual, createHash } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { HatError, isHatError } from '../../errors.ts';
import {
  decodeFrame,
  decodeJson,
  encodeFrame,
  encodeJson,
  FrameFlags,
  HEADER_BYTES,
  type Frame,
} from '../protocol/frame.ts';
import { decodeHidden, encodeHidden } from '../protocol/hidden-codec.ts';
import {
  errorBody,
  helloSchema,
  parseControl,
  PROMPT_ROWS,
  ROWS_ADVICE,
  WIRE_ERROR_CODES,
  type WireErrorCode,
} from '../protocol/control.ts';
import type { MiddleExecutor } from './executor.ts';
import type { Logger } from './logger.ts';
import { EmulatedLink, type LinkSpec } from '../link.ts';
import type { CloudMetrics, RequestKind } from './cloud-metrics.ts';
import { ConnectionGuard } from './connection-guard.ts';
import { answerHttp } from './http-endpoints.ts';

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
  /** Largest cache a session may reach (the split's trained context unless set). */
  maxContext?: number;
  /** Open TCP connections beyond this are destroyed at once (default: sessions + 64). */
  maxConnections?: number;
  /** A connection must upgrade and send its hello within this (default 5 s). */
  handshakeTimeoutMs?: number;
  /** Requests of one session queued or running; its socket is paused past this (default 4). */
  maxInflightPerSession?: number;
  /** Bytes queued to a session's socket beyond which it stops taking new work (default 8 MiB). */
  maxBufferedBytes?: number;
  /** WebSocket ping interval; a device that misses one pong is dropped (default 5 s). */
  keepaliveMs?: number;
  /** Failed hellos (bad token) per address and window before the address is refused outright (default 5 per 60 s). */
  authFailures?: { limit: number; windowMs: number };
  /** Prometheus metrics, served on /metrics (cloud-metrics.ts); omitted: no /metrics. */
  metrics?: CloudMetrics;
}

export { helloSchema } from '../protocol/control.ts';
export type ErrorFrameCode = WireErrorCode;

/** Before the hello is accepted a connection may send only small messages (the hello is a short JSON object). */
const HELLO_MAX_BYTES = 8 * 1024;
/** How long stop() lets connections end on their own before it cuts them (sessions are destroyed after 1 s). */
const STOP_GRACE_MS = 1500;
/** How often the server pings each device (a load balancer's tunnel timeout must span a few: src/deploy). */
export const DEFAULT_KEEPALIVE_MS = 5000;
const DEFAULTS = {
  handshakeTimeoutMs: 5000,
  maxInflightPerSession: 4,
  maxBufferedBytes: 8 << 20,
  keepaliveMs: DEFAULT_KEEPALIVE_MS,
};

interface DeviceSession {
  id: number;
  socket: WebSocket;
  link?: EmulatedLink;
  nextSeqIn: number;
  nextSeqOut: number;
  lastActive: number;
  closed: boolean;
  /** Requests sent to the executor and not yet answered. */
  inflight: number;
  /** Whether a pong answered the last ping. */
  alive: boolean;
  /** Frames read while --max-inflight requests were out (ws still emits what it had buffered when paused). */
  backlog: Frame[];
  /** The device's hello listed 'rows-advice': its results carry the executor's advisedRows. */
  takesAdvice: boolean;
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
  private keepaliveTimer?: NodeJS.Timeout;
  private readonly maxPayloadBytes: number;
  private readonly settings: Required<Pick<CloudServerOptions, keyof typeof DEFAULTS>>;
  /** Connection cap, upgrade deadlines, failed hellos per address. */
  readonly guard: ConnectionGuard;
  private draining?: Promise<void>;
  /** Set by the first stop(): later calls wait for the same shutdown. */
  private stopping?: Promise<void>;

  constructor(options: CloudServerOptions) {
    this.options = options;
    this.settings = {
      ...DEFAULTS,
      ...Object.fromEntries(Object.entries(options).filter(([k, v]) => k in DEFAULTS && v !== undefined)),
    } as typeof this.settings;
    this.maxPayloadBytes = options.maxTokensPerFrame * options.hiddenSize * 4 + 1024;
    this.guard = new ConnectionGuard({
      maxConnections: options.maxConnections ?? options.maxSessions + 64,
      handshakeTimeoutMs: this.settings.handshakeTimeoutMs,
      authFailures: options.authFailures ?? { limit: 5, windowMs: 60_000 },
      logger: options.logger,
    });
    this.http = createServer((req, res) =>
      answerHttp(req, res, {
        sessions: this.sessions.size,
        maxSessions: options.maxSessions,
        draining: !!this.draining,
        executor: options.executor,
        metrics: options.metrics,
      }),
    );
    this.http.on('connection', (socket: Socket) =>
      this.guard.admit(socket, { draining: !!this.draining, stopping: !!this.stopping }),
    );
    this.http.on('request', (req: IncomingMessage) => this.guard.handshook(req.socket));
    this.http.on('upgrade', (req: IncomingMessage) => this.guard.handshook(req.socket));
    this.wss = new WebSocketServer({ server: this.http, perMessageDeflate: false, maxPayload: HELLO_MAX_BYTES });
    this.wss.on('connection', (socket, req) => this.accept(socket, req.socket.remoteAddress ?? '?'));
    // ws re-emits the HTTP server's errors (a port in use): start() reports them; unheard, they would crash.
    this.wss.on('error', () => {});
  }

  /** The largest cache a session may grow to. */
  get maxContext(): number {
    return this.options.maxContext ?? Number.MAX_SAFE_INTEGER;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  async start(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new HatError(
            'NETWORK',
            `cannot listen on ${this.options.host}:${this.options.port} (${error.code ?? error.message})`,
            error.code === 'EADDRINUSE'
              ? 'pick another --port or stop the process using it'
              : 'check --host and --port',
          ),
        ),
      );
      this.http.listen(this.options.port, this.options.host, () => resolve());
    });
    const checkEvery = Math.max(50, Math.min(5000, this.options.idleTimeoutMs / 4));
    this.idleTimer = setInterval(() => this.expireIdle(), checkEvery).unref();
    this.keepaliveTimer = setInterval(() => this.keepalive(), this.settings.keepaliveMs).unref();
    const address = this.http.address() as AddressInfo;
    this.options.logger.log('listening', {
      host: address.address,
      port: address.port,
      maxSessions: this.options.maxSessions,
    });
    return { host: address.address, port: address.port };
  }

  /**
   * Graceful drain: /ready answers 503 and new connections are refused; each session's requests already in flight
   * finish and are answered, then the session gets a GOING_AWAY error frame (its device resumes on another
   * replica); after `timeoutMs` whatever is left is closed the same way. Then the workers stop — none is running.
   */
  drain(timeoutMs: number): Promise<void> {
    this.draining ??= (async () => {
      this.options.logger.log('draining', {
        sessions: this.sessions.size,
        pending: this.options.executor.pending,
        timeoutMs,
      });
      const deadline = Date.now() + timeoutMs;
      for (const session of this.sessions.values())
        if (session.inflight === 0) this.fail(session, 'GOING_AWAY', 'the server is draining');
      while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      await this.stop();
    })();
    return this.draining;
  }

  /**
   * Closes every session (GOING_AWAY) and every connection that has not become one yet — a hello that arrives
   * meanwhile gets no session —, then the workers. Calling it again waits for the same shutdown.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.idleTimer);
      clearInterval(this.keepaliveTimer);
      const sessionSockets = new Set([...this.sessions.values()].map((session) => session.socket));
      for (const session of this.sessions.values()) this.fail(session, 'GOING_AWAY', 'the server is shutting down');
      for (const socket of this.wss.clients) {
        if (!sessionSockets.has(socket)) this.reject(socket, 'GOING_AWAY', 'the server is shutting down');
      }
      this.guard.destroyPending();
      await new Promise<void>((resolve) => this.wss.close(() => resolve()));
      const httpClosed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      // close() waits for every connection to end, and stops Node's request timeouts: a peer half-way through an
      // HTTP request (a slow or hostile one) would hold the shutdown for as long as it likes. Past the sessions' own
      // close (an error frame, then 1 s before they are destroyed), what is left is cut.
      const cut = setTimeout(() => this.http.closeAllConnections(), STOP_GRACE_MS);
      await httpClosed;
      clearTimeout(cut);
      await this.options.executor.close();
      this.options.logger.log('stopped');
    })();
    return this.stopping;
  }

  private newSessionId(): number {
    let id: number;
    do id = randomInt(1, 2 ** 31);
    while (this.sessions.has(id));
    return id;
  }

  private accept(socket: WebSocket, address: string): void {
    let session: DeviceSession | undefined;
    /** Set once the connection is refused: later pipelined frames are not processed. */
    let refused = false;
    const link = this.options.link ? new EmulatedLink(this.options.link) : undefined;
    const helloTimeout = setTimeout(() => {
      if (!session && !refused) {
        refused = true;
        this.reject(socket, 'BAD_FRAME', `no hello within ${this.settings.handshakeTimeoutMs} ms`);
      }
    }, this.settings.handshakeTimeoutMs);
    const raiseLimit = guardOversize(
      socket,
      () => (session ? this.maxPayloadBytes + HEADER_BYTES : HELLO_MAX_BYTES),
      (message) => {
        if (session && !session.closed) return this.fail(session, 'BAD_FRAME', message, { wsCloses: true });
        refused = true;
        this.reject(socket, 'BAD_FRAME', message, { wsCloses: true });
      },
    );
    socket.on('message', (data: RawData, isBinary: boolean) => {
      if (session) session.alive = true; // any frame shows the device is there, not only a pong
      if (link) link.up.send(rawLength(data), () => handle(data, isBinary));
      else handle(data, isBinary);
    });
    const handle = (data: RawData, isBinary: boolean) => {
      // Through an emulated link a frame arrives late: the device may have closed the socket meanwhile.
      if (refused || session?.closed || socket.readyState !== socket.OPEN) return;
      try {
        if (!isBinary) throw new HatError('PROTOCOL', 'text message received; hat frames are binary');
        const frame = decodeFrame(toBytes(data), { maxPayloadBytes: session ? this.maxPayloadBytes : HELLO_MAX_BYTES });
        if (!session) {
          clearTimeout(helloTimeout);
          session = this.handshake(socket, frame, address, link);
          if (session) raiseLimit();
          else refused = true;
        } else if (session.backlog.length > 0 || session.inflight >= this.settings.maxInflightPerSession) {
          session.backlog.push(frame);
        } else {
          this.handleFrame(session, frame);
        }
      } catch (error) {
        const message = isHatError(error) ? error.message : String(error);
        if (session) this.fail(session, 'BAD_FRAME', message);
        else {
          refused = true;
          this.reject(socket, 'BAD_FRAME', message);
        }
      }
    };
    socket.on('pong', () => {
      if (session) session.alive = true;
    });
    socket.on('close', () => {
      clearTimeout(helloTimeout);
      if (session) this.forget(session, 'closed by device');
    });
    // ws sends its own close (e.g. 1009 for an oversize message, after our error frame); destroy if the peer stalls.
    socket.on('error', () => setTimeout(() => socket.terminate(), 1000).unref());
  }

  private handshake(socket: WebSocket, frame: Frame, address: string, link?: EmulatedLink): DeviceSession | undefined {
    if (frame.header.type !== 'hello' || frame.header.seq !== 0) {
      throw new HatError('PROTOCOL', `expected hello with seq 0, got ${frame.header.type} seq ${frame.header.seq}`);
    }
    if (this.draining || this.stopping) {
      this.reject(socket, 'GOING_AWAY', this.stopping ? 'the server is shutting down' : 'the server is draining');
      return undefined;
    }
    if (this.guard.tooManyFailures(address)) {
      this.reject(socket, 'RATE_LIMITED', 'too many failed attempts from this address');
      return undefined;
    }
    const hello = parseControl(helloSchema, decodeJson(frame.payload), 'hello');
    // The token first: nothing about this server (not even its split) is revealed to a client without it.
    if (
      this.options.token !== undefined &&
      (hello.token === undefined || !sameSecret(hello.token, this.options.token))
    ) {
      this.guard.recordFailure(address);
      this.reject(socket, 'UNAUTHORIZED', 'missing or wrong token');
      return undefined;
    }
    if (hello.manifestHash !== this.options.manifestHash) {
      this.reject(
        socket,
        'MANIFEST_MISMATCH',
        `device split ${hello.manifestHash.slice(0, 12)} ` +
          `differs from the cloud's ${this.options.manifestHash.slice(0, 12)}`,
      );
      return undefined;
    }
    if (this.sessions.size >= this.options.maxSessions) {
      this.reject(socket, 'SESSION_LIMIT', `the server holds its maximum of ${this.options.maxSessions} sessions`);
      return undefined;
    }
    const session: DeviceSession = {
      id: this.newSessionId(),
      socket,
      link,
      nextSeqIn: 1,
      nextSeqOut: 0,
      lastActive: Date.now(),
      closed: false,
      inflight: 0,
      alive: true,
      backlog: [],
      takesAdvice: hello.features?.includes(ROWS_ADVICE) ?? false,
    };
    this.sessions.set(session.id, session);
    this.options.metrics?.sessionOpened(session.id);
    this.send(
      session,
      encodeFrame(
        { type: 'welcome', sessionId: session.id, seq: session.nextSeqOut++ },
        encodeJson({
          sessionId: session.id,
          hiddenSize: this.options.hiddenSize,
          maxTokensPerFrame: this.options.maxTokensPerFrame,
          ...(this.options.maxContext ? { maxContext: this.options.maxContext } : {}),
          latencyModel: this.options.executor.latencyModel(),
          keepaliveMs: this.settings.keepaliveMs,
          features: [PROMPT_ROWS],
        }),
      ),
    );
    this.options.logger.log('session-open', {
      session: session.id,
      client: hello.client,
      sessions: this.sessions.size,
    });
    return session;
  }

  private handleFrame(session: DeviceSession, frame: Frame): void {
    const { header } = frame;
    session.lastActive = Date.now();
    if (header.sessionId !== session.id)
      throw new HatError('PROTOCOL', `unknown session ${header.sessionId} on this connection`);
    if (header.seq !== session.nextSeqIn)
      throw new HatError('PROTOCOL', `out-of-order frame: seq ${header.seq}, expected ${session.nextSeqIn}`);
    session.nextSeqIn++;
    if (header.type === 'bye') {
      // The session ends here: frames pipelined behind the bye are not run, and its cache and slot are freed now,
      // not when the peer completes the close (destroyed if it stalls, as every close the server starts).
      this.forget(session, 'bye');
      session.socket.close(1000, 'bye');
      setTimeout(() => session.socket.terminate(), 1000).unref();
      return;
    }
    if (header.type !== 'forward')
      throw new HatError('PROTOCOL', `a device may not send ${header.type} frames after the handshake`);
    if (this.draining) {
      // Work already in flight is answered first (finished() then sends GOING_AWAY); this frame is not run: the
      // device sends it again to the replica it resumes on.
      if (session.inflight === 0) this.fail(session, 'GOING_AWAY', 'the server is draining');
      return;
    }
    if (header.hiddenSize !== this.options.hiddenSize) {
      throw new HatError(
        'PROTOCOL',
        `hidden size ${header.hiddenSize} does not match the middle part's ${this.options.hiddenSize}`,
      );
    }
    if (header.nTokens < 1 || header.nTokens > this.options.maxTokensPerFrame) {
      throw new HatError(
        'PROTOCOL',
        `a forward frame must carry 1..${this.options.maxTokensPerFrame} tokens, got ${header.nTokens}`,
      );
    }
    if (header.pastLength + header.nTokens > this.maxContext) {
      this.fail(
        session,
        'CONTEXT_LIMIT',
        `${header.pastLength} + ${header.nTokens} positions exceed this server's context of ${this.maxContext}`,
      );
      return;
    }
    // decodeHidden refuses non-finite values (PROTOCOL): one bad frame fails its own session, never a batch.
    const hidden = decodeHidden(frame.payload, header.nTokens, header.hiddenSize, header.dtype);
    const allPositions = (header.flags & FrameFlags.allPositions) !== 0;
    const kind: RequestKind = (header.flags & FrameFlags.prefill) !== 0 ? 'prefill_chunk' : 'verification';
    this.options.metrics?.request(kind);
    this.started(session);
    this.options.executor
      .run({
        sessionId: session.id,
        pastLength: header.pastLength,
        nTokens: header.nTokens,
        hidden,
        allPositions,
        ...(header.promptRows ? { promptRows: header.promptRows } : {}),
      })
      .then((result) => {
        if (session.closed) return;
        this.options.metrics?.answered(session.id, kind, result.queueMs, header.pastLength + header.nTokens);
        const model = this.options.executor.latencyModel();
        // The payload first: a result that cannot be encoded (fp16 range) fails the session without using a seq.
        const payload = encodeHidden(result.hidden, result.rows, header.hiddenSize, header.dtype);
        this.send(
          session,
          encodeFrame(
            {
              type: 'result',
              flags: header.flags,
              dtype: header.dtype,
              sessionId: session.id,
              seq: session.nextSeqOut++,
              pastLength: header.pastLength,
              nTokens: result.rows,
              hiddenSize: header.hiddenSize,
              queueMs: result.queueMs,
              computeMs: result.computeMs,
              latencyBaseMs: model.baseMs,
              latencyPerTokenMs: model.perTokenMs,
              advisedRows: session.takesAdvice ? Math.min(0xffff, result.advisedRows ?? 0) : 0,
            },
            payload,
          ),
        );
      })
      .catch((error: unknown) => {
        // The worker's code, as it crossed the thread and the pool, goes on the wire when it is a wire code.
        const code =
          isHatError(error) && (WIRE_ERROR_CODES as readonly string[]).includes(error.code)
            ? (error.code as WireErrorCode)
            : 'RUN_FAILED';
        this.fail(session, code, isHatError(error) ? error.message : String(error));
      })
      .finally(() => this.finished(session));
  }

  /** One more request of this session in flight: past the bound, stop reading its socket (TCP pushes back). */
  private started(session: DeviceSession): void {
    session.inflight++;
    if (session.inflight >= this.settings.maxInflightPerSession) session.socket.pause();
  }

  private finished(session: DeviceSession): void {
    session.inflight--;
    session.lastActive = Date.now();
    if (session.closed) return;
    if (this.draining && session.inflight === 0) {
      this.fail(session, 'GOING_AWAY', 'the server is draining');
      return;
    }
    try {
      while (!session.closed && session.backlog.length > 0 && session.inflight < this.settings.maxInflightPerSession) {
        this.handleFrame(session, session.backlog.shift()!);
      }
    } catch (error) {
      this.fail(session, 'BAD_FRAME', isHatError(error) ? error.message : String(error));
      return;
    }
    this.resumeIfRoom(session);
  }

  private resumeIfRoom(session: DeviceSession): void {
    const room =
      session.inflight < this.settings.maxInflightPerSession &&
      session.socket.bufferedAmount < this.settings.maxBufferedBytes;
    if (room && session.socket.isPaused) {
      session.socket.resume();
      session.alive = true; // a pong may wait in what was not read: one interval to read it
    }
  }

  private send(session: DeviceSession, bytes: Uint8Array): void {
    if (session.closed) return;
    const deliver = () => {
      if (session.socket.readyState !== session.socket.OPEN) return;
      // A device that does not read its results stops getting new work until its socket drains.
      session.socket.send(bytes, { binary: true }, () => this.resumeIfRoom(session));
      if (session.socket.bufferedAmount >= this.settings.maxBufferedBytes) session.socket.pause();
    };
    if (session.link) session.link.down.send(bytes.length, deliver);
    else deliver();
  }

  /**
   * Refuses a connection that has no session: an error frame, then the socket is closed (destroyed if it stalls).
   * `wsCloses`: ws is closing it itself (1009, an oversize message), so only the frame is sent, ahead of that close.
   */
  private reject(socket: WebSocket, code: ErrorFrameCode, message: string, { wsCloses = false } = {}): void {
    this.options.logger.log('rejected', { code, message });
    this.options.metrics?.error(code);
    if (socket.readyState !== socket.OPEN) return;
    const frame = encodeFrame({ type: 'error' }, encodeJson(errorBody(code, message)));
    if (wsCloses) return socket.send(frame, { binary: true });
    socket.send(frame, { binary: true }, () => socket.close(1008, code));
    setTimeout(() => socket.terminate(), 1000).unref();
  }

  /**
   * Sends an error frame and closes this session only. `wsCloses`: ws is closing the socket itself (1009), so the
   * frame goes straight onto it (not through an emulated link, which that close would overtake).
   */
  private fail(session: DeviceSession, code: ErrorFrameCode, message: string, { wsCloses = false } = {}): void {
    if (session.closed) return;
    this.options.logger.log('session-error', { session: session.id, code, message });
    this.options.metrics?.error(code);
    const frame = encodeFrame(
      { type: 'error', sessionId: session.id, seq: session.nextSeqOut++ },
      encodeJson(errorBody(code, message)),
    );
    if (wsCloses) {
      session.socket.send(frame, { binary: true });
      return this.forget(session, code);
    }
    this.send(session, frame);
    this.forget(session, code);
    const close = () => {
      session.socket.close(code === 'GOING_AWAY' ? 1001 : 1008, code);
      setTimeout(() => session.socket.terminate(), 1000).unref();
    };
    // Through an emulated link the error frame is delayed: the close must not overtake it.
    if (session.link) session.link.down.send(0, close);
    else close();
  }

  private forget(session: DeviceSession, reason: string): void {
    if (session.closed) return;
    session.closed = true;
    this.sessions.delete(session.id);
    this.options.executor.drop(session.id);
    this.options.metrics?.sessionClosed(session.id);
    this.options.logger.log('session-close', { session: session.id, reason, sessions: this.sessions.size });
  }

  /** Idle means no frame for the timeout and nothing queued or running for the session. */
  private expireIdle(): void {
    const now = Date.now();
    this.guard.forgetStaleFailures();
    for (const session of this.sessions.values()) {
      if (session.inflight === 0 && now - session.lastActive > this.options.idleTimeoutMs) {
        this.fail(session, 'IDLE_TIMEOUT', `no frame for ${this.options.idleTimeoutMs} ms`);
      }
    }
  }

  /**
   * A device that vanished without closing (power, Wi-Fi) misses a pong and is dropped within two intervals — or,
   * when its requests were in flight, within two intervals of the last one being answered.
   */
  private keepalive(): void {
    for (const session of this.sessions.values()) {
      // While the server stops reading a session's socket because its requests are in flight, its pong sits unread
      // behind the frames it sent: the server's doing, not a vanished device. (A socket paused because the device
      // does not read its results is pinged as usual: a device that vanished never drains it.)
      if (session.socket.isPaused && session.inflight >= this.settings.maxInflightPerSession) {
        session.alive = true;
        // Still pinged, with no pong expected: the device hears that the server is there (cloud-client.ts).
        session.socket.ping();
        continue;
      }
      if (!session.alive) {
        this.options.logger.log('session-close', { session: session.id, reason: 'no pong' });
        session.socket.terminate();
        this.forget(session, 'no pong');
        continue;
      }
      session.alive = false;
      session.socket.ping();
    }
  }
}

/**
 * ws refuses a message over its limit by closing with 1009; `refuse` first sends hat's error frame (and counts and
 * logs it as any other), so the device learns why. The limit is small until the hello is accepted (an
 * unauthenticated peer cannot make the server buffer megabytes), then the frame limit. `_receiver._maxPayload` is
 * ws's own per-connection limit (ws 8).
 */
function guardOversize(socket: WebSocket, limit: () => number, refuse: (message: string) => void): () => void {
  const internals = socket as unknown as { _receiver?: { _maxPayload: number } };
  const close = socket.close.bind(socket);
  socket.close = (code?: number, reason?: string | Buffer) => {
    if (code === 1009 && socket.readyState === socket.OPEN) refuse(`message over the ${limit()}-byte limit`);
    close(code, reason);
  };
  return () => {
    if (internals._receiver) internals._receiver._maxPayload = limit();
  };
}

function rawLength(data: RawData): number {
  return Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
