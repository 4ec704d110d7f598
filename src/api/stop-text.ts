/**
 * Stop sequences over streamed text: generation stops exactly at the first occurrence of any stop string, which
 * is not returned. While streaming, text that could still turn out to be the start of a stop string is held back,
 * so no piece of a stop sequence ever reaches the client.
 */
export class StopText {
  private readonly stops: string[];
  private readonly longest: number;
  private text = '';
  private emitted = 0;
  /** Index in the text where the first stop string begins, once one has appeared. */
  stopIndex?: number;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  get stopped(): boolean {
    return this.stopIndex !== undefined;
  }

  /** The text up to the stop (or all of it). */
  get output(): string {
    return this.text.slice(0, this.stopIndex ?? this.text.length);
  }

  /** Adds generated text; returns what may be sent now. After a stop, returns '' for everything. */
  push(delta: string): string {
    if (this.stopped || delta === '') return '';
    // A stop may begin inside text already seen but not emitted: search from where one could still start.
    const from = Math.max(0, this.text.length - this.longest + 1);
    this.text += delta;
    let first = -1;
    for (const stop of this.stops) {
      const at = this.text.indexOf(stop, from);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) this.stopIndex = first;
    return this.release(first >= 0 ? first : this.text.length - this.heldBack());
  }

  /** At the end of generation: whatever is still held back (nothing after a stop). */
  flush(): string {
    return this.stopped ? '' : this.release(this.text.length);
  }

  /** Length of the longest tail of the text that is a proper prefix of some stop string. */
  private heldBack(): number {
    let hold = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.text.length); n > hold; n--) {
        if (this.text.endsWith(stop.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }

  private release(end: number): string {
    if (end <= this.emitted) return '';
    const out = this.text.slice(this.emitted, end);
    this.emitted = end;
    return out;
  }
}

/**
 * How many of `ids` it took for a stop string to appear: the smallest k such that the text of the first k ids
 * contains a stop (`textOf` decodes a prefix). The text only grows with k, so a binary search suffices.
 */
export function tokensUntilStop(count: number, stops: readonly string[], textOf: (k: number) => string): number {
  const hit = (k: number) => stops.some((s) => s.length > 0 && textOf(k).includes(s));
  let lo = 1;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (hit(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
