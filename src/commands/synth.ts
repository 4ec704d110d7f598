import type { Command } from 'commander';
import { intOption, parseOptions, z } from './common.ts';
import { configFrom, PRESETS } from '../models/config.ts';
import { synthModel } from '../models/synth.ts';
import { formatBytes } from '../models/llama-onnx.ts';
import { terminalReporter } from '../reporter.ts';

const dims = {
  vocabSize: intOption(1).optional(),
  hiddenSize: intOption(1).optional(),
  intermediateSize: intOption(1).optional(),
  layers: intOption(1).optional(),
  heads: intOption(1).optional(),
  kvHeads: intOption(1).optional(),
  headDim: intOption(2).optional(),
};

const schema = z.object({
  config: z.string().optional(),
  out: z.string().min(1),
  dtype: z.enum(['fp32', 'fp16']),
  seed: intOption(0, 2 ** 32 - 1),
  force: z.boolean().optional(),
  ...dims,
});

export function registerSynth(program: Command): void {
  program
    .command('synth')
    .description('write a random-weight Llama-family ONNX decoder of any size (for benchmarks and large-model tests)')
    .option('--config <name>', `architecture preset: ${Object.keys(PRESETS).join(', ')}`)
    .requiredOption('--out <dir>', 'folder to write model.onnx (+ model.onnx_data) and config.json into')
    .option('--dtype <type>', 'weight and activation type: fp32 or fp16', 'fp32')
    .option('--seed <n>', 'random seed for the weights', '0')
    .option('--vocab-size <n>', 'vocabulary size (overrides the preset)')
    .option('--hidden-size <n>', 'hidden size')
    .option('--intermediate-size <n>', 'MLP size')
    .option('--layers <n>', 'decoder layers')
    .option('--heads <n>', "attention heads (with --config, KV heads follow the preset's grouping)")
    .option('--kv-heads <n>', 'KV heads (grouped-query attention when fewer than heads)')
    .option('--head-dim <n>', 'per-head size (default hidden size / heads)')
    .option(
      '--force',
      'replace --out when it holds a model or other files (the whole folder, once the new one is complete)',
    )
    .action(async (raw: Record<string, unknown>) => {
      const { config: preset, out, dtype, seed, force, ...overrides } = parseOptions(schema, raw);
      const result = await synthModel(configFrom(preset, overrides), out, {
        dtype: dtype === 'fp16' ? 'float16' : 'float32',
        seed,
        force,
        reporter: terminalReporter(),
      });
      const mibPerSecond = result.weightBytes / 2 ** 20 / result.seconds;
      process.stdout.write(
        `${result.modelPath}: ${(result.parameters / 1e6).toFixed(1)} M parameters, ` +
          `${formatBytes(result.weightBytes)} in ${result.seconds.toFixed(1)} s ` +
          `(${mibPerSecond.toFixed(0)} MiB/s)\n`,
      );
    });
}
