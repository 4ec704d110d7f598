import type { ErrorCode } from '../errors.ts';

/** What one measured request yields, whatever the scenario; the aggregation works on these alone. */
export interface RequestRecord {
  scenario: string;
  promptTokens: number;
  /** Generated tokens (exactly --max-new-tokens unless the request failed). */
  tokens: number;
  ttftMs: number;
  /** Per token after the first: its round's time divided by the tokens the round committed. */
  gapsMs: number[];
  /** Verification rounds (split scenarios) or decode steps. */
  rounds: number;
  bytesUp: number;
  bytesDown: number;
  cloudComputeMs: number;
  cloudQueueMs: number;
  /** Split scenarios: the prompt's device time and upload bytes, and the hidden rows uploaded by decode rounds. */
  prefillDeviceMs: number;
  prefillBytesUp: number;
  decodeRowsUp: number;
  chunkSizes: number[];
  parallelDrafting: { branches: number; hits: number };
  /** Wall clock (ms since the epoch) when the device started it, and how long it took to the last token. */
  startedAt: number;
  durationMs: number;
  /** Time between its arrival and a device taking it (open-loop runs). */
  waitMs: number;
  error?: string;
  /** The failure's HatError code (INTERNAL for any other error), kept so that it survives the process hop. */
  errorCode?: ErrorCode;
}

/** Turns token arrival times into per-token gaps the way HatGenerator does: a round's time spread over its tokens. */
export function tokenGaps(arrivals: ReadonlyArray<{ at: number; count: number }>): number[] {
  const gaps: number[] = [];
  for (let i = 1; i < arrivals.length; i++) {
    const { at, count } = arrivals[i];
    for (let k = 0; k < count; k++) gaps.push((at - arrivals[i - 1].at) / count);
  }
  return gaps;
}
