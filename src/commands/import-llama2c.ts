import type { Command } from 'commander';
import { parseOptions, z } from './common.ts';
import { importLlama2c } from '../models/import-llama2c.ts';
import { terminalReporter } from '../reporter.ts';

const schema = z.object({
  out: z.string().min(1),
  dtype: z.enum(['fp32', 'fp16']),
  force: z.boolean().optional(),
});

export function registerImportLlama2c(program: Command): void {
  program
    .command('import-llama2c')
    .description('convert a llama2.c checkpoint and its tokenizer.bin into model.onnx + tokenizer.json')
    .argument('<checkpoint>', 'llama2.c legacy checkpoint (.bin)')
    .argument('<tokenizer>', 'llama2.c tokenizer.bin exported with it')
    .requiredOption(
      '--out <dir>',
      'folder to write model.onnx, tokenizer.json, tokenizer_config.json and config.json into',
    )
    .option('--dtype <type>', 'fp32 or fp16', 'fp32')
    .option(
      '--force',
      'replace --out when it holds a model or other files (the whole folder, once the new one is complete)',
    )
    .action(async (checkpoint: string, tokenizer: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const { dir } = await importLlama2c(checkpoint, tokenizer, options.out, {
        dtype: options.dtype === 'fp16' ? 'float16' : 'float32',
        force: options.force,
        reporter: terminalReporter(),
      });
      process.stdout.write(`${dir}\n`);
    });
}
