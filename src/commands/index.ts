/** The command table: each entry registers one thin command on the program. */
import type { Command } from 'commander';
import { registerInspect } from './inspect.ts';
import { registerServeCloud } from './serve-cloud.ts';
import { registerRunDevice } from './run-device.ts';
import { registerDemo } from './demo.ts';
import { registerTrainAdapter } from './train-adapter.ts';
import { registerSynth } from './synth.ts';
import { registerImportLlama2c } from './import-llama2c.ts';
import { registerGenerate } from './generate.ts';
import { registerSplit } from './split.ts';
import { registerBench } from './bench.ts';
import { registerDeploy } from './deploy.ts';

type Register = (program: Command) => void;

const commands: Register[] = [
  registerInspect,
  registerSplit,
  registerServeCloud,
  registerRunDevice,
  registerDemo,
  registerTrainAdapter,
  registerSynth,
  registerImportLlama2c,
  registerGenerate,
  registerBench,
  registerDeploy,
];

export function registerCommands(program: Command): void {
  for (const register of commands) register(program);
}
