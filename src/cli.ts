/**
 * The hat CLI: one commander program, one error handler. Commands live in src/commands/ and only parse,
 * validate, call core and print; every failure reaches `handleError` here and becomes one line + exit code.
 */
import { Command, CommanderError } from 'commander';
import { formatError, HatError, isHatError } from './errors.ts';
import { registerCommands } from './commands/index.ts';

export function buildProgram(): Command {
  const program = new Command('hat')
    .description('HAT device-cloud LLM inference: split, train the draft adapter, serve, run, benchmark')
    .version('0.1.0')
    // Parse errors (unknown option, missing argument) are printed by handleError, as one hat error line.
    .configureOutput({ outputError: () => {} })
    .exitOverride();
  registerCommands(program);
  return program;
}

function handleError(error: unknown): number {
  if (error instanceof CommanderError) {
    // Help and version were printed by commander; `hat` alone prints help and exits 1.
    if (error.exitCode === 0 || error.code === 'commander.help') return error.exitCode;
    const message = error.message.replace(/^error: /, '');
    process.stderr.write(`${formatError(new HatError('BAD_OPTION', message, 'run the command with --help for usage'))}
`);
    return 1;
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
