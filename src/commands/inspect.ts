/** `hat inspect <model.onnx> [--json]`: what the splitter sees in a decoder, and whether multi-token steps run. */
import type { Command } from 'commander';
import { inspectModel, type InspectReport } from '../split/inspect.ts';
import { inPlaceNote } from '../split/batching.ts';
import { parseOptions, z } from './common.ts';

export const inspectSchema = z.object({
  json: z.boolean().default(false),
  probe: z.boolean().default(true),
});

const millions = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n.toLocaleString('en-US'));

function formatReport(r: InspectReport): string {
  const a = r.attention;
  const probe = r.multiTokenStep;
  const perLayer = r.parameters.layers;
  const uniform = perLayer.every((n) => n === perLayer[0]);
  return [
    `${r.file} (IR ${r.irVersion}${r.producer ? `, ${r.producer}` : ''})`,
    `layers        ${r.layers.count}: ${r.layers.recognition}`,
    `hidden        ${r.hidden.size} ${r.hidden.dtype}, vocab ${r.vocabSize}`,
    `attention     heads ${a.heads ?? '?'} (${a.headsFrom}), ` +
      `KV heads ${a.kvHeads ?? '?'}, head size ${a.headDim ?? '?'}`,
    `KV cache      ${r.kv[0].pastKey} … ${r.kv[r.kv.length - 1].pastValue} ` +
      `→ ${r.kv[0].presentKey} … ${r.kv[r.kv.length - 1].presentValue}, layout ${a.kvLayout}`,
    `opsets        ${r.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}`,
    `contrib ops   ${
      Object.entries(r.contribOps)
        .map(([op, n]) => `${op}×${n}`)
        .join(', ') || 'none'
    }`,
    `parameters    ${millions(r.parameters.total)} total: embedding ${millions(r.parameters.embedding)}, ` +
      `${uniform ? `${millions(perLayer[0])} per layer` : `per layer ${perLayer.map(millions).join(' / ')}`}, ` +
      `head ${millions(r.parameters.head)}, ` +
      `shared ${millions(r.parameters.shared)}, prelude ${millions(r.parameters.prelude)}`,
    `external data ` +
      `${r.externalData.map((f) => `${f.file} (${millions(f.bytes)} bytes)`).join(', ') || 'none (weights inline)'}`,
    `batching      ${r.batching.mode} — ${r.batching.reason}${inPlaceNote(r.batching)}`,
    `multi-token   ${probe.name}: ${
      probe.status === 'passed'
        ? 'runs and matches token-by-token steps'
        : probe.status === 'not probed'
          ? 'not probed (--no-probe)'
          : `${probe.status.toUpperCase()} — ${'detail' in probe ? probe.detail : ''}`
    }`,
    '',
  ].join('\n');
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description(
      'show how hat sees a decoder: layers, hidden size, KV cache, opsets, parameters, multi-token-step support',
    )
    .argument('<model>', 'decoder .onnx file')
    .option('--json', 'print the report as JSON')
    .option('--no-probe', 'skip the onnxruntime multi-token-step probe')
    .action(async (model: string, raw: unknown) => {
      const options = parseOptions(inspectSchema, raw);
      const report = await inspectModel(model, { probe: options.probe });
      process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    });
}
