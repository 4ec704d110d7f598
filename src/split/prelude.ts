/**
 * Preludes — attention-mask construction, rotary tables, shape plumbing — are computed once before layer 0 and
 * feed every layer. A part that needs them gets its own copy (the extractor pulls the nodes in), taking
 * attention_mask / position_ids as inputs. What a copy may not take along is anything read from tokens or from
 * other parts' tensors, so before extraction a middle/output part's graph is rewritten:
 *  - Shape/Size of a residual-stream tensor from before the part reads the part's hidden-state input instead
 *    (same [batch, sequence, hidden] shape);
 *  - Shape/Size of another part's past KV reads this part's own past KV of the same kind (same past length);
 *  - input_ids is replaced by zeros shaped like the hidden-state input's first two dims, so plumbing that reads
 *    only its shape (Shape, Reshape then Shape, ...) still works; the privacy check then proves that no value
 *    of that stand-in reaches an output.
 */
import { DataType, int64Tensor, onnx, type NodeProto, type TensorProto } from '../onnx/model-io.ts';
import { isShapeReader } from './graph.ts';
import { TOKEN_INPUT } from './decoder.ts';
import type { KvPair } from './manifest.ts';

export const TOKEN_STAND_IN = 'hat/prelude/token_shape_zeros';

export interface PreludeRewrite {
  nodes: NodeProto[];
  initializers: TensorProto[];
}

export interface PreludeContext {
  /** The part's hidden-state input. */
  hiddenInput: string;
  /** Residual-stream tensors computed before this part (other parts own them). */
  earlierStream: Set<string>;
  /** Every layer's KV pair, and the layers this part owns. */
  allLayers: KvPair[];
  ownLayers: KvPair[];
  partName: string;
}

function tokenStandIn(hiddenInput: string): PreludeRewrite {
  const shape = 'hat/prelude/hidden_shape';
  const tokenShape = 'hat/prelude/token_shape';
  const zero = onnx.TensorProto.create({ dataType: DataType.INT64, dims: [1], rawData: new Uint8Array(8) });
  return {
    nodes: [
      onnx.NodeProto.create({ name: 'hat/prelude/Shape', opType: 'Shape', input: [hiddenInput], output: [shape] }),
      onnx.NodeProto.create({
        name: 'hat/prelude/Slice',
        opType: 'Slice',
        input: [shape, 'hat/prelude/zero', 'hat/prelude/two', 'hat/prelude/zero'],
        output: [tokenShape],
      }),
      onnx.NodeProto.create({
        name: 'hat/prelude/ConstantOfShape',
        opType: 'ConstantOfShape',
        input: [tokenShape],
        output: [TOKEN_STAND_IN],
        attribute: [
          onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: zero }),
        ],
      }),
    ],
    initializers: [int64Tensor('hat/prelude/zero', [0]), int64Tensor('hat/prelude/two', [2])],
  };
}

/** Maps every past KV name of a layer this part does not own to its own first layer's name of the same kind. */
function foreignPastSubstitutes(context: PreludeContext): Map<string, string | undefined> {
  const own = context.ownLayers[0];
  const map = new Map<string, string | undefined>();
  for (const pair of context.allLayers) {
    if (context.ownLayers.includes(pair)) continue;
    map.set(pair.pastKey, own?.pastKey);
    map.set(pair.pastValue, own?.pastValue);
  }
  return map;
}

export function rewritePrelude(nodes: NodeProto[], context: PreludeContext): PreludeRewrite {
  const foreignPast = foreignPastSubstitutes(context);
  const rewritten = nodes.map((node) => {
    const inputs = node.input ?? [];
    let changed: string[] | undefined;
    const replace = (i: number, name: string) => {
      (changed ??= [...inputs])[i] = name;
    };
    inputs.forEach((name, i) => {
      if (name === TOKEN_INPUT) replace(i, TOKEN_STAND_IN);
      else if (isShapeReader(node) && context.earlierStream.has(name)) replace(i, context.hiddenInput);
      else if (isShapeReader(node) && foreignPast.get(name)) replace(i, foreignPast.get(name)!);
    });
    return changed ? onnx.NodeProto.create({ ...node, input: changed }) : node;
  });
  const standIn = tokenStandIn(context.hiddenInput);
  return { nodes: [...standIn.nodes, ...rewritten], initializers: standIn.initializers };
}
