/**
 * Session resume on the device, as Petals' client keeps its history for a replacement server: every input-part
 * hidden state the middle part has been sent stays here, cut back whenever a request rolls the cache back. When
 * the connection drops (or the server says go away), a new session is opened — on any replica — the history
 * before the oldest unanswered request is replayed as prefill chunks, and the unanswered requests are sent again
 * in order. The middle part's cache is rebuilt from the same states, so greedy output is token-for-token what an
 * uninterrupted run gives, and the generation loop above never sees the loss. Only retryable failures (a lost
 * connection, a draining or full server: the error table's flag) are resumed. When every reconnect fails, a
 * fallback verifier (the small model) takes over the same way, or the last error surfaces.
 */
import { HatError, isRetryable } from '../../errors.ts';
import type { ForwardOptions, ForwardResult, ResumeStatus, Verifier } from './verifier.ts';

export type ResumeEvent =
  | { kind: 'lost'; error: HatError }
  | { kind: 'retry'; attempt: number; error: HatError }
  | { kind: 'resumed'; attempt: number; replayedRows: number }
  | { kind: 'fallback'; error: HatError; replayedRows: number };

export interface ResumeOptions {
  /** Opens a new cloud session. */
  connect: () => Promise<Verifier>;
  /** Reconnect attempts after each loss (0: none). */
  reconnects: number;
  /** Backoff before attempt k: min(firstMs · 2^(k−1), maxMs). */
  backoff?: { firstMs: number; maxMs: number };
  /** Takes over when every reconnect failed (the small model, `--fallback local`). */
  fallback?: () => Promise<Verifier>;
  onEvent?: (event: ResumeEvent) => void;
}

export function describeResume(event: ResumeEvent): string {
  switch (event.kind) {
    case 'retry':
      return `cannot open a cloud session (${event.error.message}): retry ${event.attempt}`;
    case 'lost':
      return `cloud connection lost (${event.error.message}): reconnecting`;
    case 'resumed':
      return `resumed on a new cloud session (attempt ${event.attempt}, replayed ${event.replayedRows} positions)`;
    case 'fallback':
      return `every reconnect failed (${event.error.message}): continuing with the small model alone`;
  }
}

const DEFAULT_BACKOFF = { firstMs: 100, maxMs: 2000 };

const backoffMs = (backoff: ResumeOptions['backoff'], attempt: number) => {
  const { firstMs, maxMs } = backoff ?? DEFAULT_BACKOFF;
  return Math.min(firstMs * 2 ** (attempt - 1), maxMs);
};

/** A first connection that failed sooner than this was refused or dropped, not left unanswered. */
const QUICK_FAILURE_MS = 2000;

/**
 * Opens the first cloud session, retrying quick retryable failures with the same backoff as a resume: a device
 * that starts while its replica drains (the balancer has not yet seen /ready turn 503) reaches another one. An
 * attempt that got no answer at all (a wrong host: the whole connect timeout) is not repeated.
 */
export async function connectWithRetries(
  options: Pick<ResumeOptions, 'connect' | 'reconnects' | 'backoff' | 'onEvent'>,
): Promise<Verifier> {
  for (let attempt = 1; ; attempt++) {
    const started = performance.now();
    try {
      return await options.connect();
    } catch (error) {
      if (!isRetryable(error)) throw error;
      if (attempt > options.reconnects || performance.now() - started >= QUICK_FAILURE_MS) {
        if (attempt === 1) throw error;
        const { code, message, hint } = error as HatError;
        throw new HatError(code, `${message} (${attempt} attempts)`, hint, { cause: error });
      }
      options.onEvent?.({ kind: 'retry', attempt, error: error as HatError });
      await new Promise((resolve) => setTimeout(resolve, backoffMs(options.backoff, attempt)));
    }
  }
}

export class ResumingVerifier implements Verifier {
  private current: Verifier;
  /** Epoch of `current`: a loss is handled once per epoch, whichever request notices it first. */
  private epoch = 0;
  private resuming?: Promise<void>;
  private resumingEpoch = -1;
  /** Input-part states of positions 0..history.length-1, as the middle part was sent them. */
  private readonly history: Float32Array[] = [];
  private bytesBefore = { up: 0, down: 0 };
  private closed = false;
  /** The session being opened or replayed by a resume: close() ends it too (it is not `current` yet). */
  private replacing?: Verifier;
  private status: ResumeStatus = { reconnects: 0 };

  constructor(
    first: Verifier,
    private readonly options: ResumeOptions,
  ) {
    this.current = first;
  }

  get wire() {
    return this.current.wire;
  }
  get maxTokensPerFrame() {
    return this.current.maxTokensPerFrame;
  }
  get initialLatency() {
    return this.current.initialLatency;
  }
  get bytesUp() {
    return this.bytesBefore.up + this.current.bytesUp;
  }
  get bytesDown() {
    return this.bytesBefore.down + this.current.bytesDown;
  }
  get resumeStatus() {
    return this.status;
  }

  async forward(
    hidden: Float32Array,
    nTokens: number,
    pastLength: number,
    options: ForwardOptions,
  ): Promise<ForwardResult> {
    this.record(hidden, nTokens, pastLength);
    for (;;) {
      const epoch = this.epoch;
      try {
        return await this.current.forward(hidden, nTokens, pastLength, options);
      } catch (error) {
        if (this.closed || !isRetryable(error)) throw error;
        // The oldest unanswered request notices first (results resolve in order); later ones replay nothing more.
        await this.resume(epoch, pastLength, error as HatError);
      }
    }
  }

  private record(hidden: Float32Array, nTokens: number, pastLength: number): void {
    if (pastLength > this.history.length) {
      throw new HatError('INTERNAL', `a request at position ${pastLength} after only ${this.history.length} were sent`);
    }
    this.history.length = pastLength;
    const width = hidden.length / nTokens;
    const copy = hidden.slice();
    for (let i = 0; i < nTokens; i++) this.history.push(copy.subarray(i * width, (i + 1) * width));
  }

  private resume(epoch: number, replayUpTo: number, error: HatError): Promise<void> {
    if (epoch !== this.epoch) return Promise.resolve(); // already replaced after this request was sent
    if (this.resumingEpoch !== epoch) {
      this.resumingEpoch = epoch;
      this.resuming = this.replace(replayUpTo, error);
    }
    return this.resuming!;
  }

  private async replace(replayUpTo: number, error: HatError): Promise<void> {
    this.options.onEvent?.({ kind: 'lost', error });
    this.bytesBefore = { up: this.bytesUp, down: this.bytesDown };
    this.current.close();
    let lastError = error;
    for (let attempt = 1; attempt <= this.options.reconnects; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, backoffMs(this.options.backoff, attempt)));
      if (this.closed) throw lastError; // the generation ended (an aborted request): no new cloud session
      let next: Verifier | undefined;
      try {
        next = this.replacing = await this.options.connect();
        if (!this.closed) await this.replay(next, replayUpTo);
      } catch (retryError) {
        next?.close();
        if (this.closed) throw lastError;
        if (!isRetryable(retryError)) throw retryError;
        lastError = retryError as HatError;
        continue;
      } finally {
        this.replacing = undefined;
      }
      // The generation ended while the session was opened or replayed: it is not kept (nor sent anything more).
      if (this.closed) {
        next.close();
        throw lastError;
      }
      this.install(next);
      this.status.reconnects++;
      this.options.onEvent?.({ kind: 'resumed', attempt, replayedRows: replayUpTo });
      return;
    }
    if (!this.options.fallback) throw lastError;
    const local = await this.options.fallback();
    await this.replay(local, replayUpTo);
    if (this.closed) {
      local.close();
      throw lastError;
    }
    this.install(local);
    this.status.fallback = { position: replayUpTo, reason: lastError.message };
    this.options.onEvent?.({ kind: 'fallback', error: lastError, replayedRows: replayUpTo });
  }

  private install(next: Verifier): void {
    this.current = next;
    this.epoch++;
  }

  /**
   * Rebuilds the middle's cache for positions [0, upTo) on a fresh session, in chunks the server accepts. Each chunk
   * says the rows the replay has left, as a prompt's do: the cloud ranks a replay among prompts by them.
   */
  private async replay(target: Verifier, upTo: number): Promise<void> {
    const chunk = target.maxTokensPerFrame > 0 ? target.maxTokensPerFrame : upTo;
    const sent: Array<Promise<ForwardResult>> = [];
    for (let start = 0; start < upTo; start += chunk) {
      const rows = this.history.slice(start, Math.min(upTo, start + chunk));
      const hidden = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
      rows.forEach((r, i) => hidden.set(r, i * r.length));
      sent.push(
        target.forward(hidden, rows.length, start, { allPositions: false, prefill: true, promptRows: upTo - start }),
      );
    }
    await Promise.all(sent);
  }

  close(): void {
    this.closed = true;
    this.current.close();
    this.replacing?.close();
  }
}
