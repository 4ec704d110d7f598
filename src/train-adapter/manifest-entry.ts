/** The `adapter` entry of manifest.json: what a device needs to load adapter.onnx and wire it by name. */
import type { AdapterManifest } from '../split/manifest.ts';
import type { AttentionAdapterConfig } from './attention-adapter.ts';
import { ADAPTER_INPUT, ADAPTER_KV } from './export-onnx.ts';

export interface AdapterManifestInput {
  kind: 'attention' | 'linear';
  file: string;
  dataFiles: string[];
  /** The output part's hidden-state input, which the adapter's output is named after. */
  outputName: string;
  defaultThreshold: number;
  metrics: Record<string, unknown>;
  /** Attention adapters only. */
  config?: AttentionAdapterConfig;
}

export function adapterManifest(input: AdapterManifestInput): AdapterManifest {
  return {
    kind: input.kind,
    file: input.file,
    dataFiles: input.dataFiles,
    defaultThreshold: input.defaultThreshold,
    input: ADAPTER_INPUT,
    output: input.outputName,
    // Attention adapters carry their own cache; a linear adapter is stateless.
    ...(input.kind === 'attention' && input.config ? { kv: [ADAPTER_KV], attention: { ...input.config } } : {}),
    metrics: input.metrics,
  };
}
