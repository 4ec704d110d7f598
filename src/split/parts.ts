/**
 * Plans and extracts the three part graphs from a recognised decoder: cut the residual stream before layer K
 * and before layer N−J (unfusing a fused residual norm sitting on a cut), give the middle and output parts
 * their own prelude copies, extract each part, and declare its inputs/outputs with value_info synthesised at
 * the cuts (JS has no shape inference: a boundary is [batch, sequence, hidden] of the stream's dtype).
 */
import { HatError } from '../errors.ts';
import {
  onnx,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../onnx/model-io.ts';
import { type DecoderStructure, TOKEN_INPUT } from './decoder.ts';
import { extract } from './extract.ts';
import { unfuseResidualNorm } from './fused-norm.ts';
import { groupQueriesOverCache } from './grouped-attention.ts';
import type { KvPair } from './manifest.ts';
import type { MaskRepair } from './mask-repair.ts';
import { tensorSpec } from './model-facts.ts';
import { rewritePrelude } from './prelude.ts';

export type PartName = 'input' | 'middle' | 'output';
export const PART_NAMES: PartName[] = ['input', 'middle', 'output'];

export interface PartGraph {
  name: PartName;
  layers: [number, number];
  /** Graph without initializers; `initializers` are the source's TensorProtos (plus hat's small constants). */
  graph: GraphProto;
  initializers: TensorProto[];
  hiddenInput?: string;
  /** The boundary tensor (input, middle) or the logits (output). */
  mainOutput: string;
  kv: KvPair[];
  /** Inputs other than the hidden state, token ids and KV: the prelude's (attention_mask, position_ids, ...). */
  preludeInputs: string[];
}

export interface PartPlan {
  parts: Record<PartName, PartGraph>;
  boundaries: { inputToMiddle: string; middleToOutput: string };
  /** Attention MatMuls rewritten to read the cache without widening it to every query head (grouped-attention.ts). */
  groupedMatMuls: number;
}

export function checkLayerCounts(layers: number, inputLayers: number, outputLayers: number): void {
  if (inputLayers + outputLayers > layers - 1) {
    throw new HatError(
      'BAD_SPLIT',
      `--input-layers ${inputLayers} + --output-layers ${outputLayers} ` +
        `leaves no layer for the middle part (the model has ${layers} layers)`,
      `keep input + output layers ≤ ${layers - 1}`,
    );
  }
}

/** Splits the source node list at the two cuts; fused residual norms on a cut become Add + norm. */
function cutNodes(
  structure: DecoderStructure,
  cutLayers: number[],
  repair?: MaskRepair,
): { nodes: NodeProto[]; wires: string[] } {
  const replacements = new Map<number, NodeProto[]>();
  if (repair) replacements.set(repair.producer, repair.nodes);
  const wires = cutLayers.map((layer) => {
    const boundary = structure.boundaries[layer];
    if (!boundary.fused) return boundary.tensor!;
    const { index } = structure;
    const unfused = unfuseResidualNorm(
      index.nodes[boundary.node],
      (name) => index.consumersOf(name).length > 0 || index.outputs.has(name),
    );
    replacements.set(boundary.node, unfused.nodes);
    return unfused.wire;
  });
  const nodes = structure.index.order.flatMap((i) => replacements.get(i) ?? [structure.index.nodes[i]]);
  return { nodes, wires };
}

/** Outputs of residual-stream nodes from the embedding up to (not including) the given chain position. */
function streamBefore(structure: DecoderStructure, boundaryNode: number): Set<string> {
  const { chain, index } = structure;
  const first = chain.indexOf(structure.embedding.node);
  const end = chain.indexOf(boundaryNode);
  return new Set(chain.slice(first, end).flatMap((n) => (index.nodes[n].output ?? []).filter(Boolean)));
}

function symbolicDims(graph: GraphProto): [string, string] {
  const dims = graph.input?.find((v) => v.name === TOKEN_INPUT)?.type?.tensorType?.shape?.dim ?? [];
  return [dims[0]?.dimParam || 'batch_size', dims[1]?.dimParam || 'sequence_length'];
}

/** The name of the output part's logits, whatever the source calls them. */
const LOGITS = 'logits';

function hiddenValueInfo(name: string, dataType: number, hiddenSize: number, dims: [string, string]): ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: dataType,
        shape: { dim: [{ dimParam: dims[0] }, { dimParam: dims[1] }, { dimValue: hiddenSize }] },
      },
    },
  });
}

/** `repair`: replace a traced attention-mask prelude with a correct causal mask in every part (mask-repair.ts). */
export function planParts(
  model: ModelProto,
  structure: DecoderStructure,
  inputLayers: number,
  outputLayers: number,
  repair?: MaskRepair,
): PartPlan {
  const graph = model.graph!;
  const layerCount = structure.layers.length;
  checkLayerCounts(layerCount, inputLayers, outputLayers);
  const cuts = [inputLayers, layerCount - outputLayers];
  const cut = cutNodes(structure, cuts, repair);
  const initializers = new Map(
    [...(graph.initializer ?? []), ...(repair?.initializers ?? [])].map((t) => [t.name ?? '', t]),
  );
  const graphInputs = new Set([...structure.index.inputs].filter((name) => !initializers.has(name)));
  const valueInfo = new Map(
    [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])].map((v) => [v.name ?? '', v]),
  );
  const caches = new Set(structure.layers.flatMap((p) => [p.pastKey, p.pastValue, p.presentKey, p.presentValue]));
  const kvHeadsOf = (tensor: string) => {
    const info = caches.has(tensor) ? valueInfo.get(tensor) : undefined;
    const heads = info && tensorSpec(info).shape[1];
    return typeof heads === 'number' ? heads : undefined;
  };
  const grouped = groupQueriesOverCache(cut.nodes, initializers, kvHeadsOf);
  for (const t of grouped.initializers) initializers.set(t.name!, t);
  const { nodes } = grouped;
  const { wires } = cut;
  const dims = symbolicDims(graph);
  const embeddingNode = structure.index.nodes[structure.embedding.node];

  const build = (
    name: PartName,
    layers: [number, number],
    hiddenInput: string | undefined,
    mainOutput: string,
    cut: number,
  ): PartGraph => {
    const kv = structure.layers.slice(layers[0], layers[1]);
    let partNodes = nodes;
    const extraInitializers: TensorProto[] = [];
    if (hiddenInput) {
      const rewrite = rewritePrelude(nodes, {
        hiddenInput,
        partName: name,
        allLayers: structure.layers,
        ownLayers: kv,
        earlierStream: streamBefore(structure, structure.boundaries[cut].node),
      });
      partNodes = rewrite.nodes;
      extraInitializers.push(...rewrite.initializers);
    }
    const outputs = [mainOutput, ...kv.flatMap((p) => [p.presentKey, p.presentValue])];
    const names = new Set([...initializers.keys(), ...extraInitializers.map((t) => t.name!)]);
    const found = extract(
      partNodes,
      { graphInputs, initializers: names },
      new Set(hiddenInput ? [hiddenInput] : []),
      outputs,
    );
    if (hiddenInput) checkSelfContained(name, found.nodes, found.graphInputs, kv, structure, embeddingNode);

    const boundaryInfo = (tensor: string, layer: number) =>
      hiddenValueInfo(tensor, structure.boundaries[layer].dataType, structure.hiddenSize, dims);
    const inputs = [
      ...(hiddenInput ? [boundaryInfo(hiddenInput, cut)] : []),
      ...(graph.input ?? []).filter((v) => found.graphInputs.has(v.name ?? '')),
    ];
    const outputInfos = outputs.map((tensor, i) =>
      i === 0 && name !== 'output' ? boundaryInfo(tensor, layers[1]) : valueInfo.get(tensor)!,
    );
    // Whatever the export calls its logits (e.g. lm_logits), the output part names them `logits`, the name every
    // runtime reader of a split expects.
    const renamed = name === 'output' && mainOutput !== LOGITS;
    const finalNodes = renamed
      ? [...found.nodes, onnx.NodeProto.create({ opType: 'Identity', input: [mainOutput], output: [LOGITS] })]
      : found.nodes;
    if (renamed) outputInfos[0] = onnx.ValueInfoProto.create({ ...outputInfos[0], name: LOGITS });
    const declared = new Set([...inputs, ...outputInfos].map((v) => v.name));
    const produced = new Set(found.nodes.flatMap((n) => n.output ?? []));
    return {
      name,
      layers,
      hiddenInput,
      mainOutput: renamed ? LOGITS : mainOutput,
      kv,
      graph: onnx.GraphProto.create({
        name: `${graph.name || 'decoder'} (${name} part)`,
        node: finalNodes,
        input: inputs,
        output: outputInfos,
        valueInfo: (graph.valueInfo ?? []).filter((v) => produced.has(v.name ?? '') && !declared.has(v.name)),
      }),
      initializers: [...initializers.values(), ...extraInitializers].filter((t) =>
        found.initializers.has(t.name ?? ''),
      ),
      preludeInputs: [...found.graphInputs].filter(
        (n) => n !== TOKEN_INPUT && !kv.some((p) => p.pastKey === n || p.pastValue === n),
      ),
    };
  };

  const last = layerCount - outputLayers;
  return {
    parts: {
      input: build('input', [0, inputLayers], undefined, wires[0], 0),
      middle: build('middle', [inputLayers, last], wires[0], wires[1], inputLayers),
      output: build('output', [last, layerCount], wires[1], structure.logits, last),
    },
    boundaries: { inputToMiddle: wires[0], middleToOutput: wires[1] },
    groupedMatMuls: grouped.rewritten,
  };
}

/** A middle/output part may read only its hidden input, its own KV and prelude inputs: never earlier layers. */
function checkSelfContained(
  name: PartName,
  nodes: NodeProto[],
  inputs: Set<string>,
  kv: KvPair[],
  structure: DecoderStructure,
  embedding: NodeProto,
): void {
  const own = new Set(kv.flatMap((p) => [p.pastKey, p.pastValue]));
  const foreign = structure.layers.flatMap((p) => [p.pastKey, p.pastValue]).find((n) => inputs.has(n) && !own.has(n));
  if (foreign && kv.length === 0) {
    throw new HatError(
      'BAD_SPLIT',
      `the ${name} part owns no layer but its prelude needs the cache length (it reads the shape of ${foreign})`,
      'give it at least one layer: --output-layers 1',
    );
  }
  if (foreign) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `the ${name} part would read ${foreign}, the cache of a layer it does not own`,
      'this graph shares cache values across layers, which hat cannot split',
    );
  }
  if (nodes.includes(embedding) || inputs.has(TOKEN_INPUT)) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `the ${name} part would recompute the token embedding: something in it reads values from before its first layer`,
      'this graph has connections that skip across layers, which hat cannot split',
    );
  }
}
