/**
 * Where a replayed session's time to first token went, along its critical path: the chain of waits that the first
 * token actually waited for. A prompt goes as chunks (one for u-shape); the device computes and uploads them one
 * after another while the cloud runs them in order, so at any moment the prompt is held by the device, the uplink,
 * the cloud's queue or the cloud's compute. Walking back from the first token: the last chunk's result left the
 * cloud when its run ended (downlink and the device's output part after that); its run started `computeMs` before;
 * before that it waited either for its own previous chunk's run (the cloud was the bottleneck: keep walking from
 * that run's end) or, when it reached the cloud after that run had ended, in the queue since it arrived (then the
 * uplink carried it since the device sent it, and the device computed until then). Every step hands the time
 * between two instants to one segment, so the segments add up to the session's TTFT exactly (less any wait for a
 * free emulated device, which load.ts measures). Instants are this process's clock; the run's compute is the
 * cloud's own measure, so the server's handling (parsing, dispatch, sending the result) lands in `cloudQueueMs`.
 */

import { answeredBySameRun } from '../../runtime/device/verifier.ts';

/** One prompt request as sent and answered, instants in ms on the replaying process's clock. */
export interface PromptRequestTimes {
  /** The device finished it and it entered the EMULATED uplink. */
  sentAt: number;
  /** It left the uplink into the WebSocket (it reached the cloud). */
  deliveredAt: number;
  /** Its result came out of the WebSocket (the cloud sent it; before the EMULATED downlink). */
  receivedAt: number;
  /**
   * The cloud's own time for the run that answered it: a run of several chunks reports the same whole-run figure to
   * each, which is how the walk tells one merged run from back-to-back runs (a float32 of a measured time).
   */
  computeMs: number;
}

export interface TtftPath {
  /** Session start to the send the path leaves the device at (the device computing chunks; emulation delays). */
  deviceMs: number;
  /** EMULATED uplink: that send to its arrival at the cloud (behind earlier chunks' bytes included). */
  uplinkMs: number;
  /** In the cloud before the path's runs started: behind other sessions' runs, and the server's own handling. */
  cloudQueueMs: number;
  /** The path's runs in the cloud. */
  cloudComputeMs: number;
  /** The last run's end to the first token: EMULATED downlink, the device's output part, the commit. */
  afterMs: number;
}

export const TTFT_SEGMENTS = ['deviceMs', 'uplinkMs', 'cloudQueueMs', 'cloudComputeMs', 'afterMs'] as const;

/**
 * The critical path of a prompt sent as `requests` (in order; the last one's result gives the first token) from
 * `startedAt` to `firstTokenAt`. Undefined when there is no request.
 */
export function ttftPath(
  requests: readonly PromptRequestTimes[],
  startedAt: number,
  firstTokenAt: number,
): TtftPath | undefined {
  if (requests.length === 0) return undefined;
  const path: TtftPath = { deviceMs: 0, uplinkMs: 0, cloudQueueMs: 0, cloudComputeMs: 0, afterMs: 0 };
  let i = requests.length - 1;
  let t = firstTokenAt;
  const handTo = (segment: keyof TtftPath, instant: number) => {
    path[segment] += t - instant;
    t = instant;
  };
  handTo('afterMs', requests[i].receivedAt);
  for (;;) {
    const run = { computeMs: requests[i].computeMs, at: t };
    handTo('cloudComputeMs', t - requests[i].computeMs);
    // Earlier chunks answered by this same run (the cloud joins a session's queued chunks): the path goes on from the
    // first of them. The time since it arrived counts as queue: a chunk joins only if it was still queued, so the
    // cloud was busy with other runs while it waited.
    while (i > 0 && answeredBySameRun({ computeMs: requests[i - 1].computeMs, at: requests[i - 1].receivedAt }, run))
      i--;
    const previousEnd = i > 0 ? requests[i - 1].receivedAt : -Infinity;
    if (previousEnd >= requests[i].deliveredAt) {
      // Held behind its own previous chunk's run: the cloud was this prompt's bottleneck there.
      handTo('cloudQueueMs', previousEnd);
      i--;
      continue;
    }
    handTo('cloudQueueMs', requests[i].deliveredAt);
    handTo('uplinkMs', requests[i].sentAt);
    handTo('deviceMs', startedAt);
    return path;
  }
}
