/**
 * Cutting through a fused residual norm. `SkipSimplifiedLayerNormalization(input, skip, gamma[, bias])` adds the
 * previous layer's output to the residual and normalises it for the next layer in one node, so the layer
 * boundary sits inside it. It is rewritten, equivalently, as Add (the residual sum, which becomes the wire
 * between parts) followed by a plain norm with the same epsilon and gamma on the consumer side.
 */
import { HatError } from '../errors.ts';
import { onnx, type AttributeProto, type NodeProto } from '../onnx/model-io.ts';

export interface Unfused {
  /** Nodes replacing the fused one, in order: the producer-side adds, then the consumer-side norm. */
  nodes: NodeProto[];
  /** The residual-sum tensor: the fused node's output 3 name when it had one. */
  wire: string;
}

function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

/** `isUsed` tells whether a tensor is read anywhere (or is a graph output). */
export function unfuseResidualNorm(node: NodeProto, isUsed: (name: string) => boolean): Unfused {
  const simplified = node.opType === 'SkipSimplifiedLayerNormalization';
  const [input, skip, gamma] = node.input ?? [];
  const beta = simplified ? '' : (node.input?.[3] ?? '');
  const bias = (simplified ? node.input?.[3] : node.input?.[4]) ?? '';
  const [normalized, mean, invStd, residual] = node.output ?? [];
  if ((mean && isUsed(mean)) || (invStd && isUsed(invStd))) {
    throw new HatError(
      'UNSUPPORTED_MODEL',
      `fused norm '${node.name || normalized}' exposes its mean/inv_std outputs, which hat cannot re-create at a cut`,
    );
  }
  const label = node.name || normalized;
  const wire = residual || `${normalized}/residual`;
  const nodes: NodeProto[] = [];
  const sum = bias ? `${label}/input_skip_sum` : wire;
  nodes.push(
    onnx.NodeProto.create({ name: `${label}/hat_residual_add`, opType: 'Add', input: [input, skip], output: [sum] }),
  );
  if (bias)
    nodes.push(
      onnx.NodeProto.create({ name: `${label}/hat_residual_bias`, opType: 'Add', input: [sum, bias], output: [wire] }),
    );
  const epsilon = attribute(node, 'epsilon');
  const attributes = [
    onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 }),
    ...(epsilon ? [epsilon] : []),
  ];
  if (simplified) {
    // stash_type 1 = compute in fp32, as the fused contrib kernel does.
    attributes.push(
      onnx.AttributeProto.create({ name: 'stash_type', type: onnx.AttributeProto.AttributeType.INT, i: 1 }),
    );
  }
  if (!normalized) return { nodes, wire }; // only the residual was used: nothing to normalise
  nodes.push(
    onnx.NodeProto.create({
      name: `${label}/hat_norm`,
      opType: simplified ? 'SimplifiedLayerNormalization' : 'LayerNormalization',
      input: simplified ? [wire, gamma] : [wire, gamma, ...(beta ? [beta] : [])],
      output: [normalized],
      attribute: attributes,
    }),
  );
  return { nodes, wire };
}
