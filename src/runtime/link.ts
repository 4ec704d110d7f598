/**
 * Link emulator (EMULATION — every printed figure that used it says so). Each direction has a bandwidth, a
 * one-way latency and a jitter. A frame occupies the link for bytes / bandwidth (serialisation delay) after the
 * previous frame has left, then arrives latency ± jitter later; frames never overtake each other.
 */
import { HatError } from '../errors.ts';
import { seededRandom } from '../random.ts';

export interface DirectionSpec {
  /** Bytes per second; Infinity for no serialisation delay. */
  bandwidth: number;
  latencyMs: number;
  jitterMs: number;
}

export interface LinkSpec {
  name: string;
  up: DirectionSpec;
  down: DirectionSpec;
}

const MB = 1e6;

/** Named profiles. Wi-Fi is HAT's testbed (uplink 5–10 MB/s, downlink 10–15 MB/s): we take the lower ends. */
export const LINK_PROFILES: Record<string, LinkSpec> = {
  none: {
    name: 'none',
    up: { bandwidth: Infinity, latencyMs: 0, jitterMs: 0 },
    down: { bandwidth: Infinity, latencyMs: 0, jitterMs: 0 },
  },
  lan: {
    name: 'lan',
    up: { bandwidth: 100 * MB, latencyMs: 0.25, jitterMs: 0.05 },
    down: { bandwidth: 100 * MB, latencyMs: 0.25, jitterMs: 0.05 },
  },
  wifi: {
    name: 'wifi',
    up: { bandwidth: 5 * MB, latencyMs: 3, jitterMs: 1 },
    down: { bandwidth: 10 * MB, latencyMs: 3, jitterMs: 1 },
  },
  '4g': {
    name: '4g',
    up: { bandwidth: 1.5 * MB, latencyMs: 25, jitterMs: 5 },
    down: { bandwidth: 4 * MB, latencyMs: 25, jitterMs: 5 },
  },
};

/** The slowest emulated bandwidth, bytes per second: a 1-MB frame then takes 1,000 s. */
const MIN_BANDWIDTH = 1e3;
/** The longest emulated rtt or jitter, ms: a minute is beyond any real link's. */
const MAX_DELAY_MS = 60_000;

/**
 * Parses `--link NAME` or explicit numbers `up=5MB,down=10MB,rtt=6,jitter=1` (MB = 10^6 bytes per second,
 * rtt in ms, split evenly between the directions).
 */
export function parseLinkSpec(text: string): LinkSpec {
  // Own keys only: `--link constructor` must not find Object.prototype's.
  if (Object.hasOwn(LINK_PROFILES, text)) return LINK_PROFILES[text];
  const fields = new Map<string, string>();
  for (const part of text.split(',')) {
    const [key, value, extra] = part.split('=');
    if (!key || value === undefined || extra !== undefined) {
      throw new HatError(
        'BAD_OPTION',
        `--link "${text}" is neither a profile nor key=value pairs`,
        `use one of ${Object.keys(LINK_PROFILES).join(', ')} or e.g. up=5MB,down=10MB,rtt=6,jitter=1`,
      );
    }
    fields.set(key.trim(), value.trim());
  }
  const bandwidth = (key: string) => {
    const raw = fields.get(key);
    if (raw === undefined) return Infinity;
    const match = /^([\d.]+)\s*(kb|mb|gb)?$/i.exec(raw);
    if (!match)
      throw new HatError(
        'BAD_OPTION',
        `--link ${key}=${raw} is not a bandwidth`,
        'write e.g. 5MB (10^6 bytes/s) or 800kB',
      );
    const unit = { kb: 1e3, mb: 1e6, gb: 1e9 }[(match[2] ?? 'mb').toLowerCase() as 'kb' | 'mb' | 'gb'];
    const bytesPerSecond = Number(match[1]) * unit;
    // 0 would hold every frame forever (its timer re-arming each millisecond) and "1.2.3" reads as NaN; below
    // MIN_BANDWIDTH a frame's delay nears the 2^31-ms limit of Node's timers, past which they fire at once.
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < MIN_BANDWIDTH)
      throw new HatError(
        'BAD_OPTION',
        `--link ${key}=${raw} is not a bandwidth of at least 1kB`,
        'write e.g. 5MB (10^6 bytes/s) or 800kB; leave the key out for no bandwidth limit',
      );
    return bytesPerSecond;
  };
  const number = (key: string) => {
    const value = Number(fields.get(key) ?? 0);
    if (!Number.isFinite(value) || value < 0 || value > MAX_DELAY_MS)
      throw new HatError(
        'BAD_OPTION',
        `--link ${key}=${fields.get(key)} is not a number of ms from 0 to ${MAX_DELAY_MS}`,
        'write e.g. rtt=6,jitter=1',
      );
    return value;
  };
  for (const key of fields.keys()) {
    if (!['up', 'down', 'rtt', 'jitter'].includes(key))
      throw new HatError('BAD_OPTION', `--link has an unknown key "${key}"`, 'keys: up, down, rtt, jitter');
  }
  const latencyMs = number('rtt') / 2;
  const jitterMs = number('jitter');
  return {
    name: text,
    up: { bandwidth: bandwidth('up'), latencyMs, jitterMs },
    down: { bandwidth: bandwidth('down'), latencyMs, jitterMs },
  };
}

export function describeLink(spec: LinkSpec): string {
  if (spec.name === 'none') return 'no link emulation';
  const rate = (b: number) => (Number.isFinite(b) ? `${(b / MB).toFixed(1)} MB/s` : 'unlimited');
  return (
    `EMULATED link "${spec.name}": up ${rate(spec.up.bandwidth)}, down ${rate(spec.down.bandwidth)}, ` +
    `one-way ${spec.up.latencyMs} ms ± ${spec.up.jitterMs} ms`
  );
}

/** One direction of an emulated link: schedules each frame's delivery in order. */
export class EmulatedDirection {
  private readonly spec: DirectionSpec;
  private readonly random: () => number;
  private linkFreeAt = 0;
  private lastArrival = 0;

  constructor(spec: DirectionSpec, seed = 1) {
    this.spec = spec;
    // Seeded so emulated jitter repeats across runs.
    const random = seededRandom(seed);
    this.random = () => random.uniform();
  }

  get passthrough(): boolean {
    return !Number.isFinite(this.spec.bandwidth) && this.spec.latencyMs === 0 && this.spec.jitterMs === 0;
  }

  /** Milliseconds from now until a frame of `bytes` sent now arrives; advances the link's state. */
  delayFor(bytes: number, now = performance.now()): number {
    const serialisationMs = Number.isFinite(this.spec.bandwidth) ? (bytes / this.spec.bandwidth) * 1000 : 0;
    const leaves = Math.max(now, this.linkFreeAt) + serialisationMs;
    this.linkFreeAt = leaves;
    const jitter = this.spec.jitterMs ? (this.random() * 2 - 1) * this.spec.jitterMs : 0;
    const arrival = Math.max(leaves + Math.max(0, this.spec.latencyMs + jitter), this.lastArrival);
    this.lastArrival = arrival;
    return arrival - now;
  }

  /**
   * Calls `deliver` when the frame would have arrived, strictly in the order frames were sent. Passthrough links
   * deliver synchronously. One timer for the oldest frame rather than one per frame: Node starts a timer from the
   * event loop's cached clock, so a frame sent late in a long turn could otherwise fire before an earlier one.
   */
  send(bytes: number, deliver: () => void): void {
    if (this.passthrough) {
      deliver();
      return;
    }
    const now = performance.now();
    this.inFlight.push({ arrival: now + this.delayFor(bytes, now), deliver });
    if (this.inFlight.length === 1) this.armTimer();
  }

  private readonly inFlight: Array<{ arrival: number; deliver: () => void }> = [];

  private armTimer(): void {
    setTimeout(() => {
      try {
        // Timers fire on whole milliseconds: a frame due within half of one goes now rather than a tick later.
        while (this.inFlight.length > 0 && this.inFlight[0].arrival <= performance.now() + 0.5) {
          this.inFlight.shift()!.deliver();
        }
      } finally {
        if (this.inFlight.length > 0) this.armTimer(); // a throwing deliver() must not stall the frames behind it
      }
    }, this.inFlight[0].arrival - performance.now());
  }
}

export class EmulatedLink {
  readonly spec: LinkSpec;
  readonly up: EmulatedDirection;
  readonly down: EmulatedDirection;

  constructor(spec: LinkSpec, seed = 1) {
    this.spec = spec;
    this.up = new EmulatedDirection(spec.up, seed);
    this.down = new EmulatedDirection(spec.down, seed + 1);
  }
}
