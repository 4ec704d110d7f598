/**
 * Sub-graph extraction in the manner of onnx.utils.Extractor: walk backwards from the wanted outputs, stop at
 * the wanted inputs, keep the nodes reached in their original (topological) order and the initializers and
 * graph inputs they read. Names read but neither produced, fed nor stored are reported as dangling.
 */
import { HatError } from '../errors.ts';
import type { NodeProto } from '../onnx/model-io.ts';
import { nodeInputs } from './graph.ts';

export interface ExtractionSources {
  graphInputs: Set<string>;
  initializers: Set<string>;
}

export interface Extraction {
  nodes: NodeProto[];
  initializers: Set<string>;
  /** Source-graph inputs the part reads (besides its cut inputs). */
  graphInputs: Set<string>;
}

export function extract(
  nodes: NodeProto[],
  sources: ExtractionSources,
  cutInputs: Set<string>,
  outputs: string[],
): Extraction {
  const producer = new Map<string, number>();
  nodes.forEach((node, i) => (node.output ?? []).forEach((name) => name && producer.set(name, i)));
  const keep = new Set<number>();
  const initializers = new Set<string>();
  const graphInputs = new Set<string>();
  const seen = new Set<string>();
  const stack = [...outputs];
  while (stack.length) {
    const name = stack.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    if (cutInputs.has(name)) continue;
    const node = producer.get(name);
    if (node !== undefined) {
      if (!keep.has(node)) {
        keep.add(node);
        stack.push(...nodeInputs(nodes[node]));
      }
    } else if (sources.initializers.has(name)) {
      initializers.add(name);
    } else if (sources.graphInputs.has(name)) {
      graphInputs.add(name);
    } else {
      throw new HatError(
        'BAD_MODEL',
        `tensor '${name}' is read but never produced, fed or stored (dangling name)`,
        'the model graph is inconsistent: re-export it',
      );
    }
  }
  return { nodes: nodes.filter((_, i) => keep.has(i)), initializers, graphInputs };
}
