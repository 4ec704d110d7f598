/**
 * N benchmark devices, each its own process (a real device has its own cores and runtime), driven over IPC.
 * Requests go to an idle device; the pool never runs two requests on one device at once.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { forkOnCores } from './cores.ts';
import { fileURLToPath } from 'node:url';
import { HatError, type ErrorCode } from '../errors.ts';
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
  | { type: 'error'; id: number; error: { message: string; code?: string; hint?: string } };

const DEVICE_ENTRY = fileURLToPath(new URL('./device-process.ts', import.meta.url));

class DeviceProcess {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(r: DeviceReply): void; reject(e: Error): void }>();
  busy = false;

  constructor(
    readonly child: ChildProcess,
    readonly index: number,
  ) {
    child.on('message', (message: DeviceReply) => {
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (!waiter) return;
      if (message.type === 'error') {
        const { code, message: text, hint } = message.error;
        waiter.reject(new HatError((code ?? 'INTERNAL') as ErrorCode, `device ${index}: ${text}`, hint));
      } else {
        waiter.resolve(message);
      }
    });
    child.once('exit', (code) => {
      for (const waiter of this.pending.values())
        waiter.reject(new HatError('INTERNAL', `device process ${index} exited (code ${code})`));
      this.pending.clear();
    });
  }

  ask<T extends DeviceReply>(request: Unnumbered<DeviceRequest>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: DeviceReply) => void, reject });
      this.child.send({ ...request, id });
    });
  }
}

export class DevicePool {
  private readonly idleWaiters: Array<() => void> = [];

  private constructor(
    private readonly devices: DeviceProcess[],
    readonly hasAdapter: boolean,
  ) {}

  static async start(count: number, config: Omit<DeviceConfig, 'seed'>, cores?: number[]): Promise<DevicePool> {
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
      const idle = this.devices.find((d) => !d.busy);
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
    try {
      const reply = await device.ask<{ type: 'record'; id: number; record: RequestRecord }>({
        type: 'run',
        scenario,
        prompt,
        maxNewTokens,
      });
      return { ...reply.record, waitMs: performance.now() - arrived };
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
    for (const d of this.devices) d.child.disconnect();
  }
}
