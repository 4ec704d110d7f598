/**
 * N benchmark devices, each its own process (a real device has its own cores and runtime), driven over IPC.
 * Requests go to an idle device; the pool never runs two requests on one device at once.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { forkOnCores } from './cores.ts';
import { fileURLToPath } from 'node:url';
import { errorFromData, HatError, type ErrorData } from '../errors.ts';
import type { DeviceConfig } from './device-runner.ts';
import type { StageCosts } from './calibrate.ts';
import type { RequestRecord } from './record.ts';
import type { Scenario } from './scenarios.ts';
import type { BenchPrompt } from './prompts.ts';

export type DeviceRequest =
  | { type: 'init'; id: number; config: DeviceConfig }
  | { type: 'run'; id: number; scenario: Scenario; prompt: BenchPrompt; maxNewTokens: number }
  | { type: 'calibrate'; id: number };

/** A request before the pool numbers it (Omit over a union would merge its members). */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

export type DeviceReply =
  | { type: 'ready'; id: number; hasAdapter: boolean }
  | { type: 'record'; id: number; record: RequestRecord }
  | { type: 'costs'; id: number; costs: StageCosts }
  | { type: 'error'; id: number; error: ErrorData };

const DEVICE_ENTRY = fileURLToPath(new URL('./device-process.ts', import.meta.url));

class DeviceProcess {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(r: DeviceReply): void; reject(e: Error): void }>();
  busy = false;
  /** False once the process exited or its channel broke: it is never handed a request again. */
  alive = true;

  constructor(
    readonly child: ChildProcess,
    readonly index: number,
    onDeath: () => void,
  ) {
    child.on('message', (message: DeviceReply) => {
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (!waiter) return;
      if (message.type === 'error') {
        waiter.reject(errorFromData(message.error, 'INTERNAL', `device ${index}: `));
      } else {
        waiter.resolve(message);
      }
    });
    const die = (why: string) => {
      if (!this.alive) return;
      this.alive = false;
      for (const waiter of this.pending.values())
        waiter.reject(
          new HatError('RUNTIME', `device process ${index} ${why}`, 'see its error above; the run cannot go on'),
        );
      this.pending.clear();
      onDeath();
    };
    // Without an 'error' listener a send to a dead process would throw from an event and end the bench.
    child.on('error', (error) => die(`failed (${error.message})`));
    child.once('exit', (code, signal) => die(`exited (${signal ?? `code ${code}`})`));
  }

  ask<T extends DeviceReply>(request: Unnumbered<DeviceRequest>): Promise<T> {
    if (!this.alive || !this.child.connected)
      return Promise.reject(new HatError('RUNTIME', `device process ${this.index} is gone`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: DeviceReply) => void, reject });
      this.child.send({ ...request, id });
    });
  }

  close(): void {
    if (this.child.connected) this.child.disconnect();
  }
}

export class DevicePool {
  private constructor(
    private readonly devices: DeviceProcess[],
    readonly hasAdapter: boolean,
    private readonly idleWaiters: Array<() => void>,
  ) {}

  static async start(count: number, config: Omit<DeviceConfig, 'seed'>, cores?: number[]): Promise<DevicePool> {
    const idleWaiters: Array<() => void> = [];
    // A device that dies wakes every request waiting for one: they pick another or fail.
    const wakeAll = () => idleWaiters.splice(0).forEach((wake) => wake());
    const devices = Array.from(
      { length: count },
      (_, i) =>
        new DeviceProcess(
          fork(DEVICE_ENTRY, [], {
            ...forkOnCores(cores),
            serialization: 'advanced',
            stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
          }),
          i,
          wakeAll,
        ),
    );
    try {
      const replies = await Promise.all(
        devices.map((d, i) =>
          d.ask<{ type: 'ready'; id: number; hasAdapter: boolean }>({
            type: 'init',
            config: { ...config, seed: i + 1 },
          }),
        ),
      );
      return new DevicePool(
        devices,
        replies.every((r) => r.hasAdapter),
        idleWaiters,
      );
    } catch (error) {
      for (const d of devices) d.child.kill();
      throw error;
    }
  }

  get size(): number {
    return this.devices.length;
  }

  private async acquire(): Promise<DeviceProcess> {
    for (;;) {
      if (!this.devices.some((d) => d.alive))
        throw new HatError('RUNTIME', 'every device process has exited', 'see their errors above');
      const idle = this.devices.find((d) => d.alive && !d.busy);
      if (idle) {
        idle.busy = true;
        return idle;
      }
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
  }

  private release(device: DeviceProcess): void {
    device.busy = false;
    this.idleWaiters.shift()?.();
  }

  /** Runs one request on the next idle device; `waitMs` is how long it waited for one. */
  async run(scenario: Scenario, prompt: BenchPrompt, maxNewTokens: number): Promise<RequestRecord> {
    const arrived = performance.now();
    const device = await this.acquire();
    const waitMs = performance.now() - arrived;
    try {
      const reply = await device.ask<{ type: 'record'; id: number; record: RequestRecord }>({
        type: 'run',
        scenario,
        prompt,
        maxNewTokens,
      });
      return { ...reply.record, waitMs };
    } finally {
      this.release(device);
    }
  }

  /** Runs one request on every device at once (warm-up: first runs pay onnxruntime's one-time costs). Call it idle. */
  async onEach(scenario: Scenario, prompt: BenchPrompt, maxNewTokens: number): Promise<void> {
    await Promise.all(
      this.devices.map(async (device) => {
        device.busy = true;
        try {
          await device.ask({ type: 'run', scenario, prompt, maxNewTokens });
        } finally {
          this.release(device);
        }
      }),
    );
  }

  async calibrate(): Promise<StageCosts> {
    const device = await this.acquire();
    try {
      return (await device.ask<{ type: 'costs'; id: number; costs: StageCosts }>({ type: 'calibrate' })).costs;
    } finally {
      this.release(device);
    }
  }

  close(): void {
    for (const d of this.devices) d.close();
  }
}
