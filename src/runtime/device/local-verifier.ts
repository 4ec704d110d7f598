/**
 * The middle part replaced by the adapter, on the device: after the cloud is gone, verification by the small
 * model itself. Drafts made by the same small model then pass (greedy: always; sampling: with probability one),
 * so generation continues exactly as the small model alone would — through the same loop, with its own cache.
 */
import { HatError } from '../../errors.ts';
import { PartRunner } from '../part-runner.ts';
import type { WireDTypeName } from '../protocol/frame.ts';
import type { ForwardOptions, ForwardResult, Verifier } from './verifier.ts';

export class LocalVerifier implements Verifier {
  readonly maxTokensPerFrame = 0;
  readonly initialLatency = { baseMs: 0, perTokenMs: 0 };
  readonly bytesUp = 0;
  readonly bytesDown = 0;
  private readonly runner: PartRunner;
  /** The last request's run: requests arrive pipelined (a prompt's chunks back to back), and run one after another. */
  private previous: Promise<unknown> = Promise.resolve();

  /** `adapter`: the device's adapter runner; this verifier keeps a cache of its own over the same session. */
  constructor(
    adapter: PartRunner,
    readonly wire: WireDTypeName,
  ) {
    this.runner = PartRunner.fromSession(adapter.session, adapter.io);
  }

  forward(hidden: Float32Array, nTokens: number, pastLength: number, options: ForwardOptions): Promise<ForwardResult> {
    // A request's past is what the ones before it leave: it runs once they have (each is checked against that).
    const run = this.previous.then(() => this.run(hidden, nTokens, pastLength, options));
    this.previous = run.catch(() => undefined);
    return run;
  }

  private async run(
    hidden: Float32Array,
    nTokens: number,
    pastLength: number,
    options: ForwardOptions,
  ): Promise<ForwardResult> {
    if (pastLength > this.runner.length) {
      throw new HatError('INTERNAL', `local verification at ${pastLength} on a cache of ${this.runner.length}`);
    }
    const started = performance.now();
    this.runner.truncate(pastLength);
    const out = await this.runner.step({ hidden }, nTokens);
    const rows = options.allPositions ? nTokens : 1;
    const data = options.allPositions ? out.data : out.data.slice((nTokens - 1) * out.cols);
    const ms = performance.now() - started;
    return {
      hidden: data,
      rows,
      queueMs: 0,
      computeMs: ms,
      latency: this.initialLatency,
      roundTripMs: ms,
      bytesUp: 0,
      bytesDown: 0,
    };
  }

  close(): void {}
}
