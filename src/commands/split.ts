/** `hat split <model.onnx> --out <dir>`: parse and validate, call the splitter, print where the parts went. */
import type { Command } from 'commander';
import { terminalReporter } from '../reporter.ts';
import type { SplitManifest } from '../split/manifest.ts';
import { splitModel } from '../split/split.ts';
import { inPlaceNote } from '../split/batching.ts';
import { intOption, numberOption, parseOptions, z } from './common.ts';

export const splitSchema = z.object({
  out: z.string().min(1),
  inputLayers: intOption(0).optional(),
  outputLayers: intOption(0).optional(),
  weights: z.enum(['copy', 'reference']).default('copy'),
  verify: z.boolean().default(true),
  maskRepair: z.boolean().default(true),
  force: z.boolean().default(false),
  atol: numberOption(0).optional(),
  rtol: numberOption(0).optional(),
  json: z.boolean().default(false),
});

function servingLine(s: NonNullable<NonNullable<SplitManifest['verification']>['serving']>): string {
  return (
    `  optimized runs (as served) deviate by ≤ ${s.maxAbsError.toExponential(2)} abs, ` +
    `${s.maxRelError.toExponential(2)} rel; ` +
    `greedy choices changed: ${s.argmaxChanges}`
  );
}

export function registerSplit(program: Command): void {
  program
    .command('split')
    .description(
      'cut an ONNX decoder into input.onnx (embedding + first layers), ' +
        'middle.onnx and output.onnx (final norm + LM head)',
    )
    .argument('<model>', 'decoder .onnx file (external data next to it)')
    .requiredOption('--out <dir>', 'directory to create (written atomically)')
    .option('--input-layers <K>', 'decoder layers in the input part (default 2, lowered so the middle keeps one)')
    .option('--output-layers <J>', 'decoder layers in the output part besides final norm + head (default 0)')
    .option(
      '--weights <mode>',
      'copy: each part gets its own data file; reference: point at the source data (hard links, no copy)',
      'copy',
    )
    .option('--no-verify', 'skip the check that the composed parts reproduce the model (needs RAM for model + parts)')
    .option('--no-mask-repair', "keep the model's traced attention mask even if it breaks multi-token cached steps")
    .option('--atol <x>', 'structural check: absolute tolerance (default 1e-5 fp32, 2e-3 fp16)')
    .option(
      '--rtol <x>',
      'structural check: tolerance relative to the largest |value| of each tensor (default 1e-5 fp32, 2e-3 fp16)',
    )
    .option('--force', 'replace --out if it exists')
    .option('--json', 'print the manifest as JSON')
    .action(async (model: string, raw: unknown) => {
      const options = parseOptions(splitSchema, raw);
      const result = await splitModel(
        { model, ...options, repairMask: options.maskRepair },
        terminalReporter({ quiet: options.json }),
      );
      const m = result.manifest;
      if (options.json) {
        process.stdout.write(`${JSON.stringify(m, null, 2)}\n`);
        return;
      }
      const layers = (p: [number, number]) => (p[1] > p[0] ? `layers ${p[0]}–${p[1] - 1}` : 'no layers');
      process.stdout.write(
        [
          `split ${m.source.file} (${m.source.layers} layers, hidden ${m.hidden.size} ${m.hidden.dtype}) ` +
            `into ${result.dir}`,
          `  input.onnx   embedding + ${layers(m.parts.input.layers)}  → ${m.boundaries.inputToMiddle}`,
          `  middle.onnx  ${layers(m.parts.middle.layers)}  → ${m.boundaries.middleToOutput}`,
          `  output.onnx  ${layers(m.parts.output.layers)} + final norm + LM head → logits`,
          `  privacy: ${m.privacy.passed ? 'passed' : 'FAILED'}; ` +
            `multi-token cached steps: ${m.multiTokenCachedSteps ? 'yes' : 'no'}` +
            `${m.verification ? '' : ' (not verified: --no-verify)'}`,
          `  serve-cloud batching: ${batchingLine(m.batching)}`,
          ...(m.verification?.serving ? [servingLine(m.verification.serving)] : []),
          '',
        ].join('\n'),
      );
    });
}

function batchingLine(batching: SplitManifest['batching']): string {
  return batching ? `${batching.mode} — ${batching.reason}${inPlaceNote(batching)}` : 'none';
}
