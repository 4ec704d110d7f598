/**
 * A tiny discrete-event engine: simulated time, a heap of timed wake-ups, and `await sleep(ms)` for processes
 * written as ordinary async functions. Each event's continuation runs to its next await before time advances.
 */
export class EventLoop {
  now = 0;
  private heap: Array<{ time: number; seq: number; wake: () => void }> = [];
  private seq = 0;

  sleep(ms: number): Promise<void> {
    return new Promise((wake) => this.push({ time: this.now + Math.max(0, ms), seq: this.seq++, wake }));
  }

  until(time: number): Promise<void> {
    return this.sleep(time - this.now);
  }

  /** Runs events until none is left. */
  async run(): Promise<void> {
    while (this.heap.length) {
      const event = this.pop();
      this.now = event.time;
      event.wake();
      await new Promise<void>((resolve) => setImmediate(resolve)); // let the woken process reach its next await
    }
  }

  private before(a: number, b: number): boolean {
    const x = this.heap[a],
      y = this.heap[b];
    return x.time < y.time || (x.time === y.time && x.seq < y.seq);
  }

  private swap(a: number, b: number): void {
    [this.heap[a], this.heap[b]] = [this.heap[b], this.heap[a]];
  }

  private push(event: { time: number; seq: number; wake: () => void }): void {
    this.heap.push(event);
    for (let i = this.heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private pop(): { time: number; seq: number; wake: () => void } {
    const top = this.heap[0];
    const last = this.heap.pop()!;
    if (this.heap.length) {
      this.heap[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1,
          r = l + 1;
        let m = i;
        if (l < this.heap.length && this.before(l, m)) m = l;
        if (r < this.heap.length && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}
