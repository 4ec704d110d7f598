/**
 * serve-cloud's defences before a connection becomes a session, each bounded: a cap on open TCP connections, a
 * deadline to upgrade (or make an HTTP request) after which the socket is destroyed, and failed hellos rate-limited
 * per remote address. server.ts asks it; it holds no session state.
 */
import type { Socket } from 'node:net';
import type { Logger } from './logger.ts';

export interface ConnectionGuardOptions {
  /** Open connections beyond this are destroyed at once. */
  maxConnections: number;
  /** A connection must upgrade (or make an HTTP request) within this, ms. */
  handshakeTimeoutMs: number;
  /** Failed hellos per address and window before the address is refused outright. */
  authFailures: { limit: number; windowMs: number };
  logger: Logger;
}

/** Refusals are logged at most this often, as one count (a flood must not flood the log). */
const REFUSAL_LOG_MS = 1000;

export class ConnectionGuard {
  private readonly options: ConnectionGuardOptions;
  /** Raw TCP connections not yet upgraded or answered, with the deadline that destroys them. */
  private readonly handshaking = new Map<Socket, NodeJS.Timeout>();
  private connections = 0;
  private refusedSinceLog = 0;
  private lastRefusalLog = 0;
  /** Recent failed hellos per remote address. */
  private readonly failures = new Map<string, number[]>();

  constructor(options: ConnectionGuardOptions) {
    this.options = options;
  }

  /** Admits a new TCP connection under the cap, with its deadline; `refusing` (draining, stopping) refuses all. */
  admit(socket: Socket, refusing: { draining: boolean; stopping: boolean }): void {
    const cap = this.options.maxConnections;
    if (this.connections >= cap || refusing.draining || refusing.stopping) {
      socket.destroy();
      this.refusedSinceLog++;
      if (Date.now() - this.lastRefusalLog > REFUSAL_LOG_MS) {
        this.options.logger.log('connections-refused', {
          count: this.refusedSinceLog,
          open: this.connections,
          cap,
          draining: refusing.draining,
        });
        this.refusedSinceLog = 0;
        this.lastRefusalLog = Date.now();
      }
      return;
    }
    this.connections++;
    socket.once('close', () => {
      this.connections--;
      this.handshook(socket);
    });
    this.handshaking.set(
      socket,
      setTimeout(() => {
        this.handshaking.delete(socket);
        socket.destroy();
      }, this.options.handshakeTimeoutMs),
    );
  }

  /** The connection upgraded or made its request: its deadline is off. */
  handshook(socket: Socket): void {
    clearTimeout(this.handshaking.get(socket));
    this.handshaking.delete(socket);
  }

  /** Destroys every connection that has not upgraded yet (shutdown). */
  destroyPending(): void {
    for (const [socket, timer] of this.handshaking) {
      clearTimeout(timer);
      socket.destroy();
    }
    this.handshaking.clear();
  }

  /** Whether `address` has used up its failed hellos in the window (and forgets it once they have aged out). */
  tooManyFailures(address: string): boolean {
    const { limit, windowMs } = this.options.authFailures;
    const recent = (this.failures.get(address) ?? []).filter((t) => Date.now() - t < windowMs);
    if (recent.length) this.failures.set(address, recent);
    else this.failures.delete(address);
    return recent.length >= limit;
  }

  recordFailure(address: string): void {
    this.failures.set(address, [...(this.failures.get(address) ?? []), Date.now()]);
  }

  /** Forgets addresses whose failures aged out: one that failed once and never came back would stay for good. */
  forgetStaleFailures(): void {
    for (const address of this.failures.keys()) this.tooManyFailures(address);
  }

  /** TCP connections open now (upgraded ones included). */
  get openConnections(): number {
    return this.connections;
  }

  /** Addresses with failed hellos on record. */
  get addressesWithFailures(): number {
    return this.failures.size;
  }
}
