import type { Command } from 'commander';
import { deviceMetricsTable } from './metrics-table.ts';
import { intOption, numberOption, parseOptions, z } from './common.ts';
import { DEFAULT_SPLIT, runDemo } from '../apps/demo.ts';
import { describeLink, parseLinkSpec } from '../runtime/link.ts';
import { terminalReporter } from '../reporter.ts';

const schema = z.object({
  split: z.string(),
  maxNewTokens: intOption(1, 100000),
  temperature: numberOption(0, 100),
  seed: intOption(0),
  link: z.string(),
  json: z.boolean().optional(),
});

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole system on the embedded default model: a local cloud process + this device, text streamed',
    )
    .argument('[prompt]', 'prompt text', 'And God said')
    .option('--split <dir>', 'split directory with adapter', DEFAULT_SPLIT)
    .option('--max-new-tokens <n>', 'tokens to generate', '64')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--link <profile|spec>', 'EMULATED link between device and cloud: wifi, 4g, lan, none', 'wifi')
    .option('--json', 'print one JSON object instead of streaming text')
    .action(async (prompt: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const reporter = terminalReporter({ quiet: options.json });
      const link = parseLinkSpec(options.link);
      // The prompt is echoed with the first committed text, after the server's start-up lines.
      let echoed = false;
      const write = (text: string) => {
        if (!echoed) process.stdout.write(prompt);
        echoed = true;
        process.stdout.write(text);
      };
      const result = await runDemo(
        {
          splitDir: options.split,
          prompt,
          maxNewTokens: options.maxNewTokens,
          temperature: options.temperature,
          topP: 1,
          seed: options.seed,
          draftThreshold: 'auto',
          maxDraft: 6,
          speculative: true,
          parallelDrafting: true,
          parallelBranches: 1,
          chunk: 'auto',
          wire: 'fp16',
          link: link.name === 'none' ? undefined : link,
          fallbackLocal: false,
          onText: options.json ? undefined : write,
        },
        reporter,
      );
      if (options.json) {
        process.stdout.write(
          `${JSON.stringify({
            ids: result.ids,
            text: result.text,
            metrics: result.metrics,
            link: describeLink(link),
          })}\n`,
        );
      } else {
        process.stdout.write('\n');
        process.stderr.write(`${deviceMetricsTable(result.metrics)}\n`);
      }
      if (result.error) throw result.error;
    });
}
