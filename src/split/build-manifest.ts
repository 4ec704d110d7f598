/**
 * manifest.json of a freshly written split: source identity, cuts, boundaries, each part's IO, KV ownership,
 * prelude handling, privacy result, model facts from config.json, and how the weights were written.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { LoadedModel } from '../onnx/model-io.ts';
import { decideBatching } from './batching.ts';
import type { DecoderStructure } from './decoder.ts';
import { MANIFEST_FORMAT, type PartManifest, type SplitManifest } from './manifest.ts';
import type { MaskRepair } from './mask-repair.ts';
import { configSlidingWindow, readModelConfig } from '../runtime/model-config.ts';
import { attentionFacts, hiddenDType, tensorSpec } from './model-facts.ts';
import { PART_NAMES, type PartGraph, type PartName, type PartPlan } from './parts.ts';
import type { PartWeights, WeightsMode } from './weights.ts';

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function modelFacts(source: LoadedModel, structure: DecoderStructure): NonNullable<SplitManifest['model']> {
  const config = readModelConfig(source.dir);
  const id = (value: unknown) => (Array.isArray(value) ? value[0] : value) as number | undefined;
  return {
    vocabSize: (config.vocab_size as number | undefined) ?? structure.embedding.vocabSize,
    bosTokenId: id(config.bos_token_id),
    eosTokenId: id(config.eos_token_id),
  };
}

function partManifest(part: PartGraph, dataFiles: string[]): PartManifest {
  return {
    file: `${part.name}.onnx`,
    dataFiles,
    layers: part.layers,
    inputs: (part.graph.input ?? []).map(tensorSpec),
    outputs: (part.graph.output ?? []).map(tensorSpec),
  };
}

export interface ManifestInputs {
  source: LoadedModel;
  dataFiles: Map<string, number>;
  structure: DecoderStructure;
  inputLayers: number;
  mode: WeightsMode;
  plan: PartPlan;
  written: Record<PartName, PartWeights>;
  privacy: SplitManifest['privacy'];
  companions: string[];
  repair?: MaskRepair;
}

/** The manifest of a freshly written split; the caller adds the verification results. */
export async function buildManifest(inputs: ManifestInputs): Promise<SplitManifest> {
  const { source, structure, dataFiles, mode, plan, written, privacy, companions, repair } = inputs;
  const attention = attentionFacts(source.model, structure, source.dir);
  return {
    format: MANIFEST_FORMAT,
    source: {
      file: basename(source.path),
      sha256: await sha256(source.path),
      layers: structure.layers.length,
      dataFiles: [...dataFiles.keys()].map((file) => ({ file, bytes: statSync(resolve(source.dir, file)).size })),
    },
    hidden: { size: structure.hiddenSize, dtype: hiddenDType(structure.boundaries[inputs.inputLayers].dataType) },
    attention: {
      heads: attention.heads,
      kvHeads: attention.kvHeads,
      headDim: attention.headDim,
      kvLayout: attention.kvLayout,
    },
    boundaries: plan.boundaries,
    parts: {
      input: partManifest(plan.parts.input, written.input.dataFiles),
      middle: partManifest(plan.parts.middle, written.middle.dataFiles),
      output: partManifest(plan.parts.output, written.output.dataFiles),
    },
    kv: { input: plan.parts.input.kv, middle: plan.parts.middle.kv, output: plan.parts.output.kv },
    prelude: {
      strategy: 'duplicated into each part that needs it',
      tokenShape: 'middle/output take the sequence shape from their hidden-state input, never from input_ids',
      inputs: Object.fromEntries(PART_NAMES.map((name) => [name, plan.parts[name].preludeInputs])),
      maskRepair: repair
        ? `the traced mask ${repair.tensor} is rebuilt from attention_mask as a causal + padding mask` +
          `${repair.window ? ` with a ${repair.window}-position sliding window` : ''}` +
          ` (the source fails multi-token steps on a non-empty cache)`
        : "none: the model's own mask construction is kept",
    },
    privacy,
    multiTokenCachedSteps: false,
    batching: decideBatching(
      plan.parts.middle.graph,
      plan.parts.middle.kv,
      repair?.window ?? configSlidingWindow(source.dir),
    ),
    ...(companions.includes('tokenizer.json') ? { tokenizer: 'tokenizer.json' } : {}),
    extraFiles: companions.filter((file) => file !== 'tokenizer.json'),
    model: modelFacts(source, structure),
    weights: {
      mode,
      bytes: { input: written.input.bytes, middle: written.middle.bytes, output: written.output.bytes },
    },
  };
}
