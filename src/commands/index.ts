/** The command table: each entry registers one thin command on the program. */
import type { Command } from 'commander';
import { registerServeCloud } from './serve-cloud.ts';

type Register = (program: Command) => void;

const commands: Register[] = [
  registerServeCloud,
];

export function registerCommands(program: Command): void {
  for (const register of commands) register(program);
}
