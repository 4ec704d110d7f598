/**
 * The device's connection to serve-cloud: one WebSocket, the hello/welcome handshake, and forward requests whose
 * results come back in order. Every frame passes through the (optionally emulated) link, and every byte sent is
 * counted — and can be recorded, which is how the privacy test inspects the uplink.
 */
import WebSocket from 'ws';
import { HatError } from '../../errors.ts';
import {
  decodeFrame,
  decodeJson,
  encodeFrame,
  encodeJson,
  FrameFlags,
  type Frame,
  type WireDTypeName,
} from '../protocol/frame.ts';
import {
  errorBodySchema,
  errorFromBody,
  parseControl,
  PROMPT_ROWS,
  ROWS_ADVICE,
  welcomeSchema,
} from '../protocol/control.ts';
import { decodeHidden, encodeHidden } from '../protocol/hidden-codec.ts';
import { EmulatedLink, LINK_PROFILES, type LinkSpec } from '../link.ts';
import type { ForwardOptions, ForwardResult, Verifier } from './verifier.ts';

export type { ForwardResult } from './verifier.ts';

export interface CloudClientOptions {
  url: string;
  manifestHash: string;
  hiddenSize: number;
  wire: WireDTypeName;
  token?: string;
  link?: LinkSpec;
  /** Called with every frame the device sends, exactly as it goes on the wire. */
  recordUplink?: (bytes: Uint8Array) => void;
  connectTimeoutMs?: number;
}

/**
 * Keepalive intervals (the welcome's keepaliveMs) with nothing at all from the cloud — no frame, no ping — after which
 * the device takes the link for dead: a partition or a vanished host sends no FIN or RST, and the requests waiting on
 * it would never settle (nor would a resume start). The server pings every session each interval, a busy one too.
 */
export const SILENT_INTERVALS = 3;

interface Waiting {
  sentAt: number;
  bytesUp: number;
  /** Rows its result must carry: every position's, or the last one's (a prefill chunk). */
  rows: number;
  resolve(result: ForwardResult): void;
  reject(error: Error): void;
}

/** One cloud session over one WebSocket. */
export class CloudClient implements Verifier {
  readonly options: CloudClientOptions;
  private socket!: WebSocket;
  private link: EmulatedLink;
  private sessionId = 0;
  private seq = 0;
  private readonly waiting: Waiting[] = [];
  private failure?: HatError;
  /** When anything last arrived from the cloud, and the check that it keeps arriving (armed by the welcome). */
  private lastHeard = performance.now();
  private watchdog?: NodeJS.Timeout;
  bytesUp = 0;
  bytesDown = 0;
  maxTokensPerFrame = 0;
  /** The largest cache this server lets a session grow to (its welcome), when it says. */
  maxContext?: number;
  /** The cloud's welcome lists 'prompt-rows': prefill chunks tell it the rows their prompt has left. */
  private takesPromptRows = false;
  initialLatency = { baseMs: 0, perTokenMs: 0 };

  private constructor(options: CloudClientOptions) {
    this.options = options;
    this.link = new EmulatedLink(options.link ?? LINK_PROFILES.none);
  }

  static async connect(options: CloudClientOptions): Promise<CloudClient> {
    const client = new CloudClient(options);
    await client.open();
    return client;
  }

  get wire(): WireDTypeName {
    return this.options.wire;
  }

  get closed(): boolean {
    return this.failure !== undefined;
  }

  private open(): Promise<void> {
    const { url, connectTimeoutMs = 10_000 } = this.options;
    return new Promise((resolve, reject) => {
      let welcomed = false;
      const fail = (error: HatError) => {
        clearInterval(this.watchdog);
        this.failure ??= error;
        for (const w of this.waiting.splice(0)) w.reject(this.failure);
        if (!welcomed) reject(this.failure);
      };
      const timer = setTimeout(() => {
        fail(
          new HatError(
            'NETWORK',
            `no answer from the cloud at ${url} within ${connectTimeoutMs} ms`,
            'check that serve-cloud is running and reachable',
          ),
        );
        this.socket.terminate();
      }, connectTimeoutMs);
      try {
        this.socket = new WebSocket(url, { perMessageDeflate: false });
      } catch (error) {
        clearTimeout(timer);
        reject(
          new HatError(
            'BAD_OPTION',
            `--cloud ${url} is not a WebSocket URL (${(error as Error).message})`,
            'use ws://HOST:PORT',
          ),
        );
        return;
      }
      this.socket.binaryType = 'nodebuffer';
      this.socket.on('open', () => {
        (this.socket as unknown as { _socket?: { setNoDelay(v: boolean): void } })._socket?.setNoDelay(true);
        this.sendRaw(
          encodeFrame(
            { type: 'hello', seq: this.seq++ },
            encodeJson({
              manifestHash: this.options.manifestHash,
              token: this.options.token,
              client: `hat-device/${process.pid}`,
              features: [ROWS_ADVICE],
            }),
          ),
        );
      });
      this.socket.on('ping', () => (this.lastHeard = performance.now()));
      this.socket.on('message', (data: Buffer) => {
        this.lastHeard = performance.now();
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        this.bytesDown += bytes.length;
        this.link.down.send(bytes.length, () => {
          let frame: Frame;
          try {
            frame = decodeFrame(bytes, { maxPayloadBytes: 1 << 30 });
          } catch (error) {
            fail(error as HatError);
            this.socket.close();
            return;
          }
          try {
            if (frame.header.type === 'error') {
              fail(errorFromBody(parseControl(errorBodySchema, decodeJson(frame.payload), 'error frame')));
            } else if (frame.header.type === 'welcome') {
              const body = parseControl(welcomeSchema, decodeJson(frame.payload), 'welcome');
              if (body.hiddenSize !== this.options.hiddenSize) {
                throw new HatError(
                  'MANIFEST_MISMATCH',
                  `the cloud's middle part takes hidden size ${body.hiddenSize}, ` +
                    `this device sends ${this.options.hiddenSize}`,
                );
              }
              this.sessionId = body.sessionId;
              this.maxTokensPerFrame = body.maxTokensPerFrame;
              this.maxContext = body.maxContext;
              this.takesPromptRows = body.features?.includes(PROMPT_ROWS) ?? false;
              this.initialLatency = body.latencyModel;
              if (body.keepaliveMs) this.watchSilence(body.keepaliveMs, fail);
              welcomed = true;
              clearTimeout(timer);
              resolve();
            }
          } catch (error) {
            fail(error as HatError);
            this.socket.close();
            return;
          }
          if (frame.header.type === 'result') {
            try {
              this.settle(frame, bytes.length);
            } catch (error) {
              fail(error as HatError);
              this.socket.close();
            }
          }
        });
      });
      // A socket's end travels the emulated link like a frame: an error frame the cloud sent just before closing
      // still arrives first, so the device reports the cloud's reason (and its code's retryability).
      this.socket.on('error', (error: Error) => {
        clearTimeout(timer);
        this.link.down.send(0, () =>
          fail(
            new HatError(
              'NETWORK',
              `cannot reach the cloud at ${url}: ${error.message}`,
              'check that serve-cloud is running and the URL is right',
            ),
          ),
        );
      });
      this.socket.on('close', () => {
        clearTimeout(timer);
        this.link.down.send(0, () =>
          fail(
            new HatError(
              'NETWORK',
              'the cloud connection closed',
              'the server stopped or dropped this session; see its log',
            ),
          ),
        );
      });
    });
  }

  private watchSilence(keepaliveMs: number, fail: (error: HatError) => void): void {
    const limitMs = SILENT_INTERVALS * keepaliveMs;
    this.watchdog = setInterval(() => {
      if (performance.now() - this.lastHeard <= limitMs) return;
      fail(
        new HatError(
          'NETWORK',
          `nothing from the cloud for ${limitMs} ms (it pings every ${keepaliveMs} ms): the link or the server is gone`,
          'the device resumes on another session with --reconnect',
        ),
      );
      this.socket.terminate();
    }, keepaliveMs).unref();
  }

  /** Resolves the oldest request with this result; a result that cannot be its answer breaks the protocol. */
  private settle(frame: Frame, bytesDown: number): void {
    const { header } = frame;
    const waiting = this.waiting[0];
    if (!waiting || header.nTokens !== waiting.rows || header.hiddenSize !== this.options.hiddenSize) {
      throw new HatError(
        'PROTOCOL',
        waiting
          ? `a result of ${header.nTokens} × ${header.hiddenSize} answers a request of ${waiting.rows} × ` +
              `${this.options.hiddenSize}`
          : 'a result arrived with no request waiting for it',
        'device and cloud disagree about the protocol: check that both run the same hat version',
      );
    }
    this.waiting.shift();
    try {
      waiting.resolve({
        hidden: decodeHidden(frame.payload, header.nTokens, header.hiddenSize, header.dtype),
        rows: header.nTokens,
        queueMs: header.queueMs,
        computeMs: header.computeMs,
        latency: { baseMs: header.latencyBaseMs, perTokenMs: header.latencyPerTokenMs },
        ...(header.advisedRows ? { advisedRows: header.advisedRows } : {}),
        roundTripMs: performance.now() - waiting.sentAt,
        bytesUp: waiting.bytesUp,
        bytesDown,
      });
    } catch (error) {
      waiting.reject(error as Error);
    }
  }

  private sendRaw(bytes: Uint8Array): void {
    this.options.recordUplink?.(bytes);
    this.bytesUp += bytes.length;
    this.link.up.send(bytes.length, () => {
      if (this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes, { binary: true });
    });
  }

  /**
   * Sends n hidden states to run after the cloud's cache is cut to `pastLength`. Requests may be pipelined;
   * results resolve in order.
   */
  forward(hidden: Float32Array, nTokens: number, pastLength: number, options: ForwardOptions): Promise<ForwardResult> {
    if (this.failure) return Promise.reject(this.failure);
    const flags = (options.allPositions ? FrameFlags.allPositions : 0) | (options.prefill ? FrameFlags.prefill : 0);
    // An older cloud refuses the field; past 65,535 rows it saturates (it orders prompts, it does not count them).
    const promptRows =
      options.prefill && this.takesPromptRows && options.promptRows ? Math.min(0xffff, options.promptRows) : 0;
    const bytes = encodeFrame(
      {
        type: 'forward',
        flags,
        dtype: this.options.wire,
        sessionId: this.sessionId,
        seq: this.seq++,
        pastLength,
        nTokens,
        hiddenSize: this.options.hiddenSize,
        promptRows,
      },
      encodeHidden(hidden, nTokens, this.options.hiddenSize, this.options.wire),
    );
    return new Promise((resolve, reject) => {
      const rows = options.allPositions ? nTokens : 1;
      this.waiting.push({ sentAt: performance.now(), bytesUp: bytes.length, rows, resolve, reject });
      this.sendRaw(bytes);
    });
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN && !this.failure) {
      this.sendRaw(encodeFrame({ type: 'bye', sessionId: this.sessionId, seq: this.seq++ }));
    }
    this.failure ??= new HatError('NETWORK', 'the connection was closed by this device');
    clearInterval(this.watchdog);
    setTimeout(() => this.socket.terminate(), 50).unref();
  }
}
