/**
 * The hat CLI: one commander program, one error handler. Commands live in src/commands/ and only parse,
 * validate, call core and print; every failure reaches `handleError` here and becomes one line + exit code.
 */
import { Command, CommanderError } from 'commander';
import { formatError, isHatError } from './errors.ts';
import { registerCommands } from './commands/index.ts';

export function buildProgram(): Command {
  const program = new Command('hat')
    .description('HAT device-cloud LLM inference: split, train the draft adapter, serve, run, benchmark')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerCommands(program);
  return program;
}

function handleError(error: unknown): number {
  if (error instanceof CommanderError) {
    // Commander already printed its message (or help/version, which exit 0).
    return error.exitCode;
  }
  process.stderr.write(`${formatError(error)}\n`);
  if (!isHatError(error) && process.env.HAT_DEBUG) console.error(error);
  return isHatError(error) && error.code !== 'INTERNAL' ? 1 : 70;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  process.exitCode = handleError(error);
}
