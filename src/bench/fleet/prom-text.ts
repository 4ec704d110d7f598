/**
 * Reads Prometheus text exposition (what serve-cloud's /metrics serves) into samples, and turns two scrapes of a
 * histogram into the histogram of what happened between them (the fleet benchmark scrapes before and after each
 * run). Enough of the format for prom-client's output: `name{label="value",…} number` lines, comments skipped.
 */
import { HatError } from '../../errors.ts';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const match = LINE.exec(line);
    if (!match) throw new HatError('PROTOCOL', `not a Prometheus sample line: ${line.slice(0, 80)}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(LABEL)) {
      labels[key] = value.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const value = match[3] === '+Inf' ? Infinity : match[3] === '-Inf' ? -Infinity : Number(match[3]);
    samples.push({ name: match[1], labels, value });
  }
  return samples;
}

const matches = (sample: Sample, labels: Record<string, string>) =>
  Object.entries(labels).every(([k, v]) => sample.labels[k] === v);

/** The sum of every sample of `name` whose labels include `labels` (0 when there is none). */
export function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && matches(s, labels)).reduce((n, s) => n + s.value, 0);
}

export interface HistogramCounts {
  /** Upper bounds and how many observations fell at or below each (not cumulative: per bucket). */
  buckets: Array<{ le: number; count: number }>;
  count: number;
  sum: number;
}

/** A histogram from one scrape, summed over its other labels (cumulative `le` buckets turned into per-bucket). */
export function histogram(
  samples: readonly Sample[],
  name: string,
  labels: Record<string, string> = {},
): HistogramCounts {
  const cumulative = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !matches(s, labels)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    cumulative.set(le, (cumulative.get(le) ?? 0) + s.value);
  }
  const bounds = [...cumulative.keys()].sort((a, b) => a - b);
  let below = 0;
  const buckets = bounds.map((le) => {
    const total = cumulative.get(le)!;
    const count = total - below;
    below = total;
    return { le, count };
  });
  const count = sampleValue(samples, `${name}_count`, labels);
  return { buckets, count, sum: sampleValue(samples, `${name}_sum`, labels) };
}

/** What was observed between two scrapes of the same histogram. */
export function histogramDelta(before: HistogramCounts, after: HistogramCounts): HistogramCounts {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}
