/**
 * serve-cloud in-process, for apps and tests that hold the middle part themselves: the same server and worker
 * threads as `hat serve-cloud`, with that command's defaults.
 */
import { startCloud } from '../runtime/cloud/serve.ts';
import { silentLogger, type Logger } from '../runtime/cloud/logger.ts';
import { parseLinkSpec, type LinkSpec } from '../runtime/link.ts';

export interface HatCloudOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** TCP port (default 0: a free one; see `url`). */
  port?: number;
  /** Shared secret devices must present. */
  token?: string;
  /** Worker threads, each with its own middle-part session (default 1). */
  workers?: number;
  /** onnxruntime intra-op threads per worker (default: available cores / workers). */
  threads?: number;
  maxSessions?: number;
  idleTimeoutSeconds?: number;
  maxTokensPerFrame?: number;
  maxContext?: number;
  /** An EMULATED link applied to every session: a profile name, a spec string or a LinkSpec. */
  link?: string | LinkSpec;
  /** Structured server logs (default: none). */
  logger?: Logger;
}

export class HatCloud {
  /** Where devices connect: ws://HOST:PORT. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  private readonly stopServer: () => Promise<void>;

  private constructor(host: string, port: number, stop: () => Promise<void>) {
    this.host = host;
    this.port = port;
    this.url = `ws://${host.includes(':') ? `[${host}]` : host}:${port}`;
    this.stopServer = stop;
  }

  /** Loads the split's middle part and listens; resolves once devices can connect. */
  static async start(splitDir: string, options: HatCloudOptions = {}): Promise<HatCloud> {
    const { server, host, port } = await startCloud({
      splitDir,
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      token: options.token,
      workers: options.workers ?? 1,
      threadsPerWorker: options.threads,
      maxSessions: options.maxSessions ?? 64,
      idleTimeoutMs: (options.idleTimeoutSeconds ?? 300) * 1000,
      maxTokensPerFrame: options.maxTokensPerFrame ?? 4096,
      maxContext: options.maxContext ?? 8192,
      logger: options.logger ?? silentLogger,
      link: typeof options.link === 'string' ? parseLinkSpec(options.link) : options.link,
    });
    return new HatCloud(host, port, () => server.stop());
  }

  /** Closes every session and stops the workers. */
  close(): Promise<void> {
    return this.stopServer();
  }
}
