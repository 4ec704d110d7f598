/**
 * Structural recognition of a decoder-only LLM graph, without relying on node names:
 *  1. layers are anchored on the `past_key_values.N.*` inputs and `present.N.*` outputs;
 *  2. the residual stream is the chain of nodes that every value path from the token ids to the logits passes
 *     through (its dominators; Shape/Size reads do not count as paths, so mask plumbing does not break it);
 *  3. layer N starts at the chain node just before the first chain node that layer N's past KV flows into
 *     (the residual add that merges its attention), so the stream tensor entering it is the cut point.
 */
import { HatError } from '../errors.ts';
import { DataType, tensorDims, toNumber, type ModelProto, type NodeProto } from '../onnx/model-io.ts';
import type { KvPair } from './manifest.ts';
import { findKvPairs, logitsOutputOf, PRESENT } from './kv-names.ts';
import { GraphIndex, nodeInputs } from './graph.ts';

/** Residual+norm nodes whose 4th output is the residual sum: a layer boundary can sit inside them. */
export const FUSED_RESIDUAL_NORMS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const RESIDUAL_MERGES = new Set(['Add', 'Sum', ...FUSED_RESIDUAL_NORMS]);

export const TOKEN_INPUT = 'input_ids';

export interface ResidualBoundary {
  /** Node index (in the source graph) of the residual-stream node that carries the stream into the layer. */
  node: number;
  /** The residual sum lives inside a fused Skip*LayerNormalization node: cutting here unfuses it. */
  fused: boolean;
  /** The stream tensor, when one exists (plain nodes; Skip nodes only when their output 3 is used). */
  tensor?: string;
  /** ONNX element type of the stream at this point. */
  dataType: number;
}

export interface DecoderStructure {
  index: GraphIndex;
  layers: KvPair[];
  /** Residual-stream node indices from the token input to the logits, in order. */
  chain: number[];
  /** boundaries[i] carries the stream into layer i; boundaries[layers] carries it into the final norm. */
  boundaries: ResidualBoundary[];
  embedding: { node: number; weight: string; vocabSize: number };
  hiddenSize: number;
  logits: string;
  /** One line on how the layers were found, for `hat inspect`. */
  recognition: string;
}

function rejectMergedDecoder(index: GraphIndex): void {
  const branching = index.nodes.find(
    (n) =>
      ['If', 'Loop', 'Scan'].includes(n.opType ?? '') &&
      (n.output ?? []).some((name) => PRESENT.test(name) || name === 'logits'),
  );
  if (index.inputs.has('use_cache_branch') || branching) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `merged decoder: ` +
        `${branching ? `${branching.opType} node '${branching.name || '(unnamed)'}'` : "input 'use_cache_branch'"} ` +
        `switches between cache branches, and hat cannot cut inside a branch`,
      'export a single decoder graph with past inputs ' +
        '(Optimum: --no-post-process, or use decoder_with_past_model.onnx)',
    );
  }
}

/** Chain = nodes that every value path from `source` to the node producing `sink` passes through. */
function residualChain(index: GraphIndex, source: string, sinkNode: number): number[] {
  const forward = index.valueReachableFrom([source]);
  const backward = index.valueAncestorsOf(sinkNode);
  const onPath = (n: number) => forward.has(n) && backward.has(n);
  const readsPath = (name: string) =>
    name === source || (index.producer.has(name) && onPath(index.producer.get(name)!));
  const chain: number[] = [];
  // Edges still "in flight" across the topological sweep; starts with those leaving the token input itself.
  let open = index.consumersOf(source).filter(onPath).length;
  for (const node of index.order) {
    if (!onPath(node)) continue;
    open -= nodeInputs(index.nodes[node]).filter(readsPath).length;
    const edgesOut = (index.nodes[node].output ?? [])
      .filter(Boolean)
      .reduce((sum, name) => sum + index.consumersOf(name).filter(onPath).length, 0);
    open += edgesOut;
    if (open === edgesOut) chain.push(node);
  }
  return chain;
}

function streamTensor(index: GraphIndex, node: NodeProto, chainNext: number | undefined): string | undefined {
  if (FUSED_RESIDUAL_NORMS.has(node.opType ?? '')) return node.output?.[3] || undefined;
  const outputs = (node.output ?? []).filter(Boolean);
  if (chainNext === undefined) return outputs[0];
  return outputs.find((name) => index.consumersOf(name).length > 0) ?? outputs[0];
}

export function analyzeDecoder(model: ModelProto): DecoderStructure {
  const graph = model.graph!;
  const index = new GraphIndex(graph);
  rejectMergedDecoder(index);
  const inputNames = [...index.inputs];
  const outputNames = [...index.outputs];
  const layers = findKvPairs(inputNames, outputNames);
  if (layers.length === 0) {
    throw new HatError(
      'NOT_A_DECODER',
      `the model has no past_key_values.N.* inputs / present.N.* outputs ` +
        `(inputs: ${inputNames.slice(0, 6).join(', ')})`,
      'hat splits decoder-only LLMs exported with a KV cache (Optimum text-generation-with-past or onnxruntime-genai)',
    );
  }
  if (!index.inputs.has(TOKEN_INPUT))
    throw new HatError(
      'NOT_A_DECODER',
      `the model has no '${TOKEN_INPUT}' input`,
      'export the decoder with token ids as input',
    );
  const logits = logitsOutputOf(outputNames);
  const logitsNode = logits === undefined ? undefined : index.producer.get(logits);
  if (logits === undefined || logitsNode === undefined)
    throw new HatError('NOT_A_DECODER', 'the model has no logits output', 'export the decoder with its LM head');

  const chain = residualChain(index, TOKEN_INPUT, logitsNode);
  const position = new Map(chain.map((node, i) => [node, i]));
  const embeddingPos = chain.findIndex((node) => isEmbeddingLookup(model, index.nodes[node]));
  if (embeddingPos < 0) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      'no embedding lookup (Gather over a [vocab, hidden] weight) on the path from input_ids to the logits',
      'quantised or custom embeddings are not supported yet',
    );
  }
  const embeddingNode = index.nodes[chain[embeddingPos]];
  const weight = graph.initializer!.find((t) => t.name === embeddingNode.input![0])!;
  const [vocabSize, hiddenSize] = tensorDims(weight);

  const layerStarts = layers.map((pair) => {
    const reached = index.valueReachableFrom([pair.pastKey, pair.pastValue]);
    const first = Math.min(...[...reached].map((n) => position.get(n) ?? Infinity));
    if (!Number.isFinite(first))
      throw new HatError(
        'NOT_A_DECODER',
        `${pair.pastKey} does not flow into the residual stream`,
        'the KV inputs must feed attention layers',
      );
    const presentNode = index.producer.get(pair.presentKey);
    if (presentNode === undefined || !reached.has(presentNode)) {
      throw new HatError(
        'NOT_A_DECODER',
        `${pair.presentKey} is not computed from ${pair.pastKey}`,
        'each present.N must extend past_key_values.N',
      );
    }
    return first - 1;
  });
  const streamEnd = finalStreamPosition(index, chain, layerStarts);
  const positions = [...layerStarts, streamEnd];
  positions.forEach((pos, i) => {
    if (pos < embeddingPos || (i > 0 && pos <= positions[i - 1]) || pos >= chain.length - 1) {
      throw new HatError(
        'UNSUPPORTED_MODEL',
        `could not place the residual-stream boundary before ${i < layers.length ? `layer ${i}` : 'the final norm'}`,
        'the layers do not follow one another on a single residual stream',
      );
    }
  });

  let dataType = weight.dataType ?? DataType.FLOAT;
  const dtypeAt = new Map<number, number>();
  for (let pos = embeddingPos; pos < chain.length; pos++) {
    const node = index.nodes[chain[pos]];
    if (node.opType === 'Cast') dataType = toNumber(node.attribute!.find((a) => a.name === 'to')!.i);
    dtypeAt.set(pos, dataType);
  }
  const boundaries = positions.map((pos): ResidualBoundary => {
    const node = index.nodes[chain[pos]];
    return {
      node: chain[pos],
      fused: FUSED_RESIDUAL_NORMS.has(node.opType ?? ''),
      tensor: streamTensor(index, node, chain[pos + 1]),
      dataType: dtypeAt.get(pos)!,
    };
  });

  return {
    index,
    layers,
    chain,
    boundaries,
    hiddenSize,
    logits,
    embedding: { node: chain[embeddingPos], weight: weight.name!, vocabSize },
    recognition:
      `${layers.length} layers anchored on past_key_values.{0..${layers.length - 1}}` +
      `/present.{0..${layers.length - 1}}; ` +
      `residual stream of ${chain.length} nodes from input_ids to ${logits}` +
      `${boundaries.some((b) => b.fused) ? ', residual sums inside fused Skip*LayerNormalization nodes' : ''}`,
  };
}

function isEmbeddingLookup(model: ModelProto, node: NodeProto): boolean {
  if (node.opType !== 'Gather' || node.domain) return false;
  const weight = model.graph!.initializer!.find((t) => t.name === node.input?.[0]);
  return weight !== undefined && tensorDims(weight).length === 2;
}

/**
 * Where the stream enters the final norm. With ≥ 2 layers, layers repeat: the last layer spans as many chain
 * nodes as the one before it. With one layer: the last residual merge before the logits.
 */
function finalStreamPosition(index: GraphIndex, chain: number[], layerStarts: number[]): number {
  const n = layerStarts.length;
  const isMerge = (pos: number) => RESIDUAL_MERGES.has(index.nodes[chain[pos]]?.opType ?? '');
  if (n >= 2) {
    const periodic = layerStarts[n - 1] + (layerStarts[n - 1] - layerStarts[n - 2]);
    if (periodic < chain.length - 1 && isMerge(periodic)) return periodic;
  }
  for (let pos = chain.length - 2; pos > layerStarts[n - 1]; pos--) if (isMerge(pos)) return pos;
  return -1;
}
