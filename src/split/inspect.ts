/**
 * `hat inspect` core: what the splitter sees in a model — layers and how they were found, hidden size and
 * dtype, attention geometry, KV names and layout, opsets and contrib ops, parameters per layer, external data —
 * and whether onnxruntime can run a multi-token step on a non-empty cache (chunked prefill and draft
 * verification need it; traced exports often break it).
 */
import { statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { checkExternalData, elementCount, loadModel, tensorDims, toNumber } from '../onnx/model-io.ts';
import { analyzeDecoder, type DecoderStructure } from './decoder.ts';
import { decideBatching } from './batching.ts';
import { configSlidingWindow } from '../runtime/model-config.ts';
import type { BatchingDecision, KvPair } from './manifest.ts';
import { attentionFacts, hiddenDType } from './model-facts.ts';
import { probeMultiTokenStep, type CaseResult } from './verify.ts';

export interface InspectReport {
  file: string;
  irVersion: number;
  producer: string;
  layers: { count: number; recognition: string; streamTensors: string[] };
  hidden: { size: number; dtype: string };
  vocabSize: number;
  attention: ReturnType<typeof attentionFacts>;
  kv: KvPair[];
  opsets: Array<{ domain: string; version: number }>;
  contribOps: Record<string, number>;
  parameters: { embedding: number; layers: number[]; head: number; shared: number; prelude: number; total: number };
  externalData: Array<{ file: string; bytes: number }>;
  multiTokenStep: CaseResult | { name: string; status: 'not probed' };
  /** How serve-cloud could batch sessions on a split of this model (the middle part's rules, applied to the whole). */
  batching: BatchingDecision;
}

type Segment = number | 'embedding' | 'head' | 'prelude';

/** Which part of the model each node belongs to: embedding, layer i, head, or prelude (no token values). */
function nodeSegments(structure: DecoderStructure): Segment[] {
  const { index, boundaries } = structure;
  const tokenPath = index.valueReachableFrom(['input_ids']);
  // Nodes feeding the stream at boundary i belong to segments before i. A fused boundary node itself opens layer i.
  const before = boundaries.map((b) => {
    const ancestors = index.valueAncestorsOf(b.node);
    if (b.fused) ancestors.delete(b.node);
    return ancestors;
  });
  return index.nodes.map((_, node) => {
    if (!tokenPath.has(node)) return 'prelude';
    const first = before.findIndex((set) => set.has(node));
    if (first === 0) return 'embedding';
    return first < 0 ? 'head' : first - 1;
  });
}

function countParameters(structure: DecoderStructure): InspectReport['parameters'] {
  const { index } = structure;
  const segments = nodeSegments(structure);
  const result = { embedding: 0, layers: structure.layers.map(() => 0), head: 0, shared: 0, prelude: 0, total: 0 };
  for (const tensor of index.graph.initializer ?? []) {
    const count = elementCount(tensorDims(tensor));
    result.total += count;
    const used = new Set(index.consumersOf(tensor.name ?? '').map((n) => segments[n]));
    const [only] = used;
    if (used.size !== 1) result.shared += count;
    else if (typeof only === 'number') result.layers[only] += count;
    else result[only] += count;
  }
  return result;
}

export async function inspectModel(path: string, options: { probe?: boolean } = {}): Promise<InspectReport> {
  const loaded = await loadModel(path);
  const dataFiles = checkExternalData(loaded);
  const model = loaded.model;
  const structure = analyzeDecoder(model);
  const dtype = hiddenDType(structure.boundaries[0].dataType);
  const contribOps: Record<string, number> = {};
  for (const node of structure.index.nodes) {
    if (node.domain && node.domain !== 'ai.onnx')
      contribOps[`${node.domain}::${node.opType}`] = (contribOps[`${node.domain}::${node.opType}`] ?? 0) + 1;
  }
  const kvManifest = {
    kv: { input: structure.layers, middle: [], output: [] },
    hidden: { size: structure.hiddenSize, dtype },
  };
  return {
    file: basename(loaded.path),
    irVersion: toNumber(model.irVersion),
    producer: `${model.producerName ?? ''} ${model.producerVersion ?? ''}`.trim(),
    layers: {
      count: structure.layers.length,
      recognition: structure.recognition,
      streamTensors: structure.boundaries.map((b) => b.tensor ?? '(inside fused norm)'),
    },
    hidden: { size: structure.hiddenSize, dtype },
    vocabSize: structure.embedding.vocabSize,
    attention: attentionFacts(model, structure, loaded.dir),
    kv: structure.layers,
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain || 'ai.onnx', version: toNumber(o.version) })),
    contribOps,
    parameters: countParameters(structure),
    externalData: [...dataFiles.keys()].map((file) => ({ file, bytes: statSync(resolve(loaded.dir, file)).size })),
    batching: decideBatching(model.graph!, structure.layers, configSlidingWindow(loaded.dir)),
    multiTokenStep:
      options.probe === false
        ? { name: 'multi-token step on a non-empty cache', status: 'not probed' }
        : await probeMultiTokenStep(loaded.path, kvManifest, structure.embedding.vocabSize),
  };
}
