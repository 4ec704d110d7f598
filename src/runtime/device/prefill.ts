/**
 * Chunked prefill (HAT §4.2): the prompt goes through the input part chunk by chunk, each chunk's hidden states
 * are uploaded as soon as they exist, so device compute, upload and cloud compute overlap. Chunk sizes come from
 * the ChunkPlanner (`auto`), a fixed size, or the whole prompt (`off`). The planner belongs to the device, not the
 * session: a device process passes one planner to every session (devicePlanner), so what it measured of its link,
 * its own speed and the cloud's queue sizes the next prompt's chunks from the first one.
 */
import { GENERATION_CANCELLED, untilAborted } from './abortable.ts';
import { HatError } from '../../errors.ts';
import { ChunkPlanner } from '../chunk-planner.ts';
import { lastRow, type StepOutput } from '../part-runner.ts';
import { wireBytesPerRow } from '../protocol/hidden-codec.ts';
import type { DeviceCaches } from './device-caches.ts';
import type { DeviceParts } from './device-parts.ts';
import type { MetricsRecorder } from './generation-metrics.ts';
import type { ForwardResult, Verifier } from './verifier.ts';
import type { SplitManifest } from '../../split/manifest.ts';
import type { WireDTypeName } from '../protocol/frame.ts';

/** Probe chunks sent but unanswered before `--chunk auto` waits for a first measurement. */
export const MAX_CHUNKS_IN_FLIGHT = 3;

export type ChunkOption = 'off' | 'auto' | number;

/** A chunk planner for one device: its rows go up in `wire` at the split's hidden size. */
export function devicePlanner(manifest: SplitManifest, wire: WireDTypeName): ChunkPlanner {
  return new ChunkPlanner({ bytesPerToken: wireBytesPerRow(wire, manifest.hidden.size) });
}

/** A planner built for another wire would time the link wrongly for every chunk. */
export function checkPlannerWire(planner: ChunkPlanner, manifest: SplitManifest, wire: WireDTypeName): void {
  const rowBytes = wireBytesPerRow(wire, manifest.hidden.size);
  if (planner.bytesPerToken !== rowBytes) {
    throw new HatError(
      'INTERNAL',
      `the device's chunk planner is for ${planner.bytesPerToken} bytes per row; the ${wire} wire sends ${rowBytes}`,
      'build it with devicePlanner(manifest, wire) for the wire this device sends',
    );
  }
}

export class PrefillPipeline {
  private readonly planner: ChunkPlanner;
  private readonly maxChunk: number;

  /** `planner`: the device's own (devicePlanner), kept across sessions; a fresh one when absent. */
  constructor(
    private readonly parts: DeviceParts,
    private readonly verifier: Verifier,
    planner?: ChunkPlanner,
  ) {
    this.planner = planner ?? devicePlanner(parts.manifest, verifier.wire);
    this.maxChunk = verifier.maxTokensPerFrame > 0 ? verifier.maxTokensPerFrame : 4096;
    this.planner.seed(verifier.initialLatency);
  }

  /** Every size, `off` and a fixed one included, within the cloud's frame limit: a larger frame fails the session. */
  private chunkSize(option: ChunkOption, remaining: number): number {
    if (option === 'off') return Math.min(remaining, this.maxChunk);
    if (option === 'auto') return this.planner.next(remaining, this.maxChunk);
    return Math.min(option, remaining, this.maxChunk);
  }

  /**
   * Runs the prompt through the split and returns the output part's logits at its last position, with the cloud's
   * rows advice from the last chunk's result (for the first verification). While drafting, the adapter's own cache
   * covers the prompt too; that device work overlaps the upload.
   */
  async run(
    prompt: readonly number[],
    chunk: ChunkOption,
    caches: DeviceCaches,
    recorder: MetricsRecorder,
    signal?: AbortSignal,
  ): Promise<{ logits: Float32Array; advisedRows?: number }> {
    const inFlight: Array<Promise<ForwardResult>> = [];
    let answered = 0;
    let offset = 0;
    while (offset < prompt.length) {
      if (signal?.aborted) throw GENERATION_CANCELLED; // the chunks in flight are left: their failures are caught
      // Before the link is measured, sizing waits for a result once a few probes are in flight: the link or the
      // cloud is then the bottleneck, so waiting costs little and the next sizes are informed.
      if (chunk === 'auto' && !this.planner.measured && inFlight.length - answered >= MAX_CHUNKS_IN_FLIGHT) {
        await untilAborted(inFlight[answered], signal);
      }
      const size = this.chunkSize(chunk, prompt.length - offset);
      recorder.chunkPlanned(size);
      const deviceStart = performance.now();
      const h = await this.parts.input.step({ ids: prompt.slice(offset, offset + size) }, size);
      const deviceMs = performance.now() - deviceStart;
      const sent = this.verifier.forward(h.data, size, offset, {
        allPositions: caches.outputHasCache,
        prefill: true,
        promptRows: prompt.length - offset,
      });
      this.planner.observeDevice(size, deviceMs);
      const sentAt = performance.now();
      const answer = sent.then((r) => {
        const resultAt = sentAt + r.roundTripMs;
        recorder.chunkAnswered(size, deviceMs, r, resultAt);
        this.planner.observeResult({
          bytesUp: r.bytesUp,
          sentAt,
          resultAt,
          queueMs: r.queueMs,
          computeMs: r.computeMs,
          latency: r.latency,
        });
        answered++;
        return r;
      });
      // Awaited in order below; a chunk refused while the loop still uploads later ones must not count as unhandled
      // (Node would end the process): its error surfaces when its turn comes.
      answer.catch(() => {});
      inFlight.push(answer);
      if (caches.withAdapter) await this.parts.adapter!.step({ hidden: h.data }, size);
      offset += size;
    }
    let logits: StepOutput | undefined;
    let advisedRows: number | undefined;
    for (const pending of inFlight) {
      const result = await untilAborted(pending, signal);
      if (caches.outputHasCache || pending === inFlight[inFlight.length - 1]) {
        logits = await this.parts.output.step({ hidden: result.hidden }, result.rows);
      }
      advisedRows = result.advisedRows;
    }
    return { logits: lastRow(logits!), advisedRows };
  }
}
