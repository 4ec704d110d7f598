/**
 * The one commit step of every generation loop (`hat generate`, the device, the local fallback): append
 * tokens, stop after a stop token (which is kept, as in `hat generate`) or at the token budget, and stream what
 * was committed. A speculative round commits several tokens at once; those past a stop are dropped.
 */
export type StopReason = 'stop-token' | 'max-new-tokens';

export interface CommitOptions {
  maxNewTokens: number;
  stopTokenIds?: readonly number[];
  /** Receives each batch of committed tokens as it is committed. */
  onTokens?: (ids: number[]) => void;
}

export class TokenCommitter {
  readonly ids: number[] = [];
  private readonly stop: ReadonlySet<number>;
  private stopped = false;

  constructor(private readonly options: CommitOptions) {
    this.stop = new Set(options.stopTokenIds ?? []);
  }

  get done(): boolean {
    return this.stopped || this.ids.length >= this.options.maxNewTokens;
  }

  get stopReason(): StopReason {
    return this.stopped ? 'stop-token' : 'max-new-tokens';
  }

  /** Commits `ids` up to the first stop token or the budget; returns how many were taken. */
  commit(ids: readonly number[]): number {
    const accepted: number[] = [];
    for (const id of ids) {
      if (this.done) break;
      accepted.push(id);
      this.ids.push(id);
      if (this.stop.has(id)) this.stopped = true;
    }
    if (accepted.length) this.options.onTokens?.(accepted);
    return accepted.length;
  }
}
