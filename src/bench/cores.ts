/**
 * In HAT the device and the cloud are different machines; on one bench machine they share the CPU, and a
 * device's drafting then slows the cloud's verification it overlaps (and the other way round). `--cores split`
 * pins the cloud processes and the device processes to disjoint cores with taskset, so each side computes on
 * cores of its own, as on separate machines; `--cores shared` lets the scheduler place everything; `auto` (the
 * default) splits when the machine can and says so when it cannot.
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { HatError } from '../errors.ts';

export type CoreMode = 'auto' | 'split' | 'shared';

export interface CoreAssignment {
  /** Cores for serve-cloud and the cloud-only server, or undefined when unpinned. */
  cloud?: number[];
  /** Cores all device processes share, or undefined when unpinned. */
  devices?: number[];
  /** How the cores were assigned, for the report header. */
  description: string;
}

function hasTaskset(): boolean {
  return spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
}

export function assignCores(mode: CoreMode, cores = availableParallelism()): CoreAssignment {
  const shared = `device processes, serve-cloud and the cloud-only server share these ${cores} cores`;
  if (mode === 'shared') return { description: shared };
  const obstacle =
    cores < 2
      ? `it needs at least 2 cores; this machine offers ${cores}`
      : !hasTaskset()
        ? 'it needs taskset (util-linux), which is not installed'
        : undefined;
  if (obstacle && mode === 'split')
    throw new HatError('BAD_OPTION', `--cores split: ${obstacle}`, 'use --cores shared');
  if (obstacle) return { description: `${shared} (not pinned: ${obstacle})` };
  const half = Math.floor(cores / 2);
  const cloud = Array.from({ length: cores - half }, (_, i) => i);
  const devices = Array.from({ length: half }, (_, i) => cores - half + i);
  return {
    cloud,
    devices,
    description:
      `pinned with taskset: cloud processes on core(s) ${cloud.join(',')}, ` +
      `device processes on core(s) ${devices.join(',')} (separate machines in HAT)`,
  };
}

/** The command and arguments that run `command args` on `cores` (unchanged when cores is undefined). */
export function onCores(
  cores: number[] | undefined,
  command: string,
  args: string[],
): { command: string; args: string[] } {
  return cores ? { command: 'taskset', args: ['-c', cores.join(','), command, ...args] } : { command, args };
}

/** fork() options that run a TypeScript entry under tsx on `cores`. */
export function forkOnCores(cores: number[] | undefined): { execPath: string; execArgv: string[] } {
  const { command, args } = onCores(cores, process.execPath, ['--import', 'tsx']);
  return { execPath: command, execArgv: args };
}
