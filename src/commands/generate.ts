import type { Command } from 'commander';
import { intOption, numberOption, parseOptions, PROMPT_HELP, promptInput, promptOptions, z } from './common.ts';
import { generateText } from '../apps/generate-text.ts';

const schema = z.object({
  ...promptOptions,
  maxNewTokens: intOption(1, 1_000_000),
  temperature: numberOption(0, 100),
  topP: numberOption(0, 1).refine((p) => p > 0, 'must be above 0'),
  seed: intOption(0, 2 ** 32 - 1),
  threads: intOption(1, 1024).optional(),
  json: z.boolean().optional(),
  slm: z.boolean().optional(),
});

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description(
      'generate text with a whole model on this machine (the reference the split runtime is checked against)',
    )
    .argument('<model>', 'model.onnx, a folder with model.onnx + tokenizer.json, or (with --slm) a split directory')
    .option('--prompt <text>', PROMPT_HELP.prompt)
    .option('--prompt-ids <ids>', PROMPT_HELP.promptIds)
    .option('--max-new-tokens <n>', 'tokens to generate at most', '64')
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', '0')
    .option('--top-p <p>', 'nucleus sampling mass', '1')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)')
    .option('--slm', "generate with the split's small model alone: input part → adapter → output part (no cloud)")
    .option('--json', 'print one JSON object (ids, promptIds, text, timings) instead of streaming text')
    .action(async (model: string, raw: Record<string, unknown>) => {
      const options = parseOptions(schema, raw);
      const result = await generateText(model, promptInput(options), {
        maxNewTokens: options.maxNewTokens,
        temperature: options.temperature,
        topP: options.topP,
        seed: options.seed,
        session: options.threads ? { threads: options.threads } : {},
        slm: options.slm,
        onText: options.json ? undefined : (text) => process.stdout.write(text),
      });
      if (options.json) {
        const { ids, text, ttftMs, tbtMs, promptIds, stopReason } = result;
        process.stdout.write(
          `${JSON.stringify({ ids, promptIds, text, ttftMs, tbtMs, promptTokens: promptIds.length, stopReason })}\n`,
        );
      } else {
        // Without a tokenizer there is no text to stream: print the generated ids.
        process.stdout.write(result.text === undefined ? `${result.ids.join(',')}\n` : '\n');
      }
    });
}
