import type { Command } from 'commander';
import { intOption, numberOption, parseOptions, z } from './common.ts';
import { table } from './metrics-table.ts';
import { trainSplitAdapter } from '../train-adapter/train-split.ts';
import { terminalReporter } from '../reporter.ts';

const schema = z.object({
  corpus: z.string().optional(),
  selfGenerate: intOption(1).optional(),
  kind: z.enum(['attention', 'linear']),
  epochs: intOption(1, 1000),
  lr: numberOption(1e-7, 1),
  seq: intOption(2, 4096),
  batch: intOption(1, 1024),
  maxTokens: intOption(1),
  maxSeconds: intOption(1),
  ceWeight: numberOption(0, 100),
  init: z.enum(['layer', 'random', 'adapter']),
  maxDraft: intOption(1, 64),
  evalPrompts: intOption(1, 10000),
  evalTokens: intOption(2, 4096),
  seed: intOption(0),
  threads: intOption(1, 256).optional(),
  json: z.boolean().optional(),
});

export function registerTrainAdapter(program: Command): void {
  program
    .command('train-adapter')
    .description("train the device's draft adapter on a split, evaluate the small model, pick the draft threshold")
    .argument('<split-dir>', 'directory written by `hat split` (needs all three parts)')
    .option('--corpus <file>', 'training text (UTF-8, one passage per line; every 20th line is held out)')
    .option(
      '--self-generate <tokens>',
      'without --corpus: train on this much text the full model samples itself',
      '20000',
    )
    .option('--kind <kind>', 'attention (HAT/Kangaroo: one attention block) or linear (closed-form ridge)', 'attention')
    .option('--epochs <n>', 'passes over the training text', '4')
    .option('--lr <rate>', 'peak AdamW learning rate', '2e-3')
    .option('--seq <n>', 'tokens per training window (drafts degrade past it: match the prompts devices send)', '128')
    .option('--batch <n>', 'windows per step', '8')
    .option('--max-tokens <n>', 'corpus tokens read per pass', '150000')
    .option('--max-seconds <s>', 'training time budget (the schedule fits itself to it)', '240')
    .option(
      '--ce-weight <w>',
      'weight of the cross-entropy term (HAT: 0.1; 0.5 drafted better on both models measured)',
      '0.5',
    )
    .option(
      '--init <from>',
      "layer (the last middle layer's attention, when found), random, or adapter (continue training the split's own)",
      'layer',
    )
    .option('--max-draft <n>', 'draft limit for the evaluation', '6')
    .option('--eval-prompts <n>', 'held-out prompts', '24')
    .option('--eval-tokens <n>', 'greedy full-model tokens per held-out prompt', '96')
    .option('--seed <n>', 'seed for initialisation and self-generated text', '1')
    .option('--threads <n>', 'onnxruntime intra-op threads')
    .option('--json', 'print the evaluation as JSON')
    .action(async (splitDir: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const reporter = terminalReporter({ quiet: options.json });
      const result = await trainSplitAdapter(
        { ...options, splitDir, selfGenerate: options.selfGenerate ?? 20000 },
        reporter,
      );
      if (options.json) {
        process.stdout.write(
          `${JSON.stringify({
            threshold: result.threshold,
            rows: result.rows,
            sweep: result.sweep,
            cost: result.cost,
            training: result.training,
          })}\n`,
        );
        return;
      }
      const evaluation = table([
        'adapter',
        'top-1 agreement',
        `tokens/round η=${result.threshold}`,
        'tokens/round η=0.6',
        'ms/token (cost model)',
      ]);
      for (const row of result.rows) {
        evaluation.push([
          row.adapter,
          `${(row.top1Agreement * 100).toFixed(1)} %`,
          row.tokensPerRoundBest.toFixed(2),
          row.tokensPerRoundHat.toFixed(2),
          row.msPerToken.toFixed(2),
        ]);
      }
      const sweep = table(['η', 'tokens/round', 'ms/token']);
      for (const row of result.sweep)
        sweep.push([row.threshold, row.tokensPerRound.toFixed(2), row.msPerToken.toFixed(2)]);
      process.stdout.write(`${evaluation.toString()}\n${sweep.toString()}\n`);
      process.stdout.write(
        `draft threshold η = ${result.threshold} ` +
          `(lowest expected ms per token; cost model: draft step ${result.cost.draftStepMs} ms, ` +
          `verification ${result.cost.verifyMs} ms incl. an emulated Wi-Fi round trip) ` +
          `— stored in ${splitDir}/manifest.json\n`,
      );
    });
}
