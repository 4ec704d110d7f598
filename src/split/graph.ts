/**
 * A read-only index over one ONNX graph: who produces and who consumes each tensor, a topological order, and
 * "value" reachability. Value edges skip Shape/Size: those nodes read only a tensor's shape, so a mask built
 * from Shape(input_ids) carries no token values, and layer analysis must not treat it as a token path.
 */
import type { GraphProto, NodeProto } from '../onnx/model-io.ts';
import { HatError } from '../errors.ts';

export const SHAPE_READERS = new Set(['Shape', 'Size']);

export function isShapeReader(node: NodeProto): boolean {
  return SHAPE_READERS.has(node.opType ?? '') && !node.domain;
}

/** Names a node reads, including outer-scope names its subgraphs (If/Loop/Scan bodies) use implicitly. */
export function nodeInputs(node: NodeProto): string[] {
  const names = (node.input ?? []).filter((name) => name !== '');
  for (const attribute of node.attribute ?? []) {
    for (const body of [attribute.g, ...(attribute.graphs ?? [])]) {
      if (body) names.push(...outerScopeNames(body));
    }
  }
  return names;
}

function outerScopeNames(body: GraphProto): string[] {
  const local = new Set<string>([
    ...(body.input ?? []).map((v) => v.name ?? ''),
    ...(body.initializer ?? []).map((t) => t.name ?? ''),
    ...(body.node ?? []).flatMap((n) => n.output ?? []),
  ]);
  const used = (body.node ?? []).flatMap(nodeInputs);
  used.push(...(body.output ?? []).map((v) => v.name ?? ''));
  return [...new Set(used.filter((name) => name !== '' && !local.has(name)))];
}

export class GraphIndex {
  readonly graph: GraphProto;
  readonly nodes: NodeProto[];
  /** Node indices in a topological order (the file's order when it already is one, which ONNX requires). */
  readonly order: number[];
  /** Position of each node index in `order`. */
  readonly rank: number[];
  readonly producer = new Map<string, number>();
  readonly consumers = new Map<string, number[]>();
  readonly inputs: Set<string>;
  readonly initializers: Set<string>;
  readonly outputs: Set<string>;

  constructor(graph: GraphProto) {
    this.graph = graph;
    this.nodes = graph.node ?? [];
    this.inputs = new Set((graph.input ?? []).map((v) => v.name ?? ''));
    this.initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
    this.outputs = new Set((graph.output ?? []).map((v) => v.name ?? ''));
    this.nodes.forEach((node, i) => {
      for (const name of node.output ?? []) if (name) this.producer.set(name, i);
      for (const name of nodeInputs(node)) {
        const list = this.consumers.get(name) ?? [];
        list.push(i);
        this.consumers.set(name, list);
      }
    });
    this.order = this.topologicalOrder();
    this.rank = new Array(this.nodes.length);
    this.order.forEach((node, position) => {
      this.rank[node] = position;
    });
  }

  consumersOf(name: string): number[] {
    return this.consumers.get(name) ?? [];
  }

  /** Producer indices of the node's inputs that are themselves produced by nodes. */
  producersOf(node: number): number[] {
    return nodeInputs(this.nodes[node])
      .map((name) => this.producer.get(name))
      .filter((p): p is number => p !== undefined);
  }

  /** Nodes whose values depend on any of `sources` (tensor names), not crossing Shape/Size. */
  valueReachableFrom(sources: Iterable<string>): Set<number> {
    const reached = new Set<number>();
    const stack = [...sources].flatMap((name) => this.consumersOf(name));
    while (stack.length) {
      const node = stack.pop()!;
      if (reached.has(node) || isShapeReader(this.nodes[node])) continue;
      reached.add(node);
      for (const output of this.nodes[node].output ?? []) if (output) stack.push(...this.consumersOf(output));
    }
    return reached;
  }

  /** Nodes whose values feed `target` node (inclusive), not crossing Shape/Size. */
  valueAncestorsOf(target: number): Set<number> {
    const reached = new Set<number>();
    const stack = [target];
    while (stack.length) {
      const node = stack.pop()!;
      if (reached.has(node)) continue;
      reached.add(node);
      if (isShapeReader(this.nodes[node])) continue;
      stack.push(...this.producersOf(node));
    }
    return reached;
  }

  private topologicalOrder(): number[] {
    const inFileOrder = this.nodes.every((node, i) => this.producersOfUnchecked(node).every((p) => p < i));
    if (inFileOrder) return this.nodes.map((_, i) => i);
    const pending = this.nodes.map((node) => new Set(this.producersOfUnchecked(node)).size);
    const ready = pending.flatMap((count, i) => (count === 0 ? [i] : []));
    const order: number[] = [];
    while (ready.length) {
      const node = ready.shift()!;
      order.push(node);
      const next = new Set((this.nodes[node].output ?? []).flatMap((name) => (name ? this.consumersOf(name) : [])));
      for (const consumer of next) if (--pending[consumer] === 0) ready.push(consumer);
    }
    if (order.length !== this.nodes.length)
      throw new HatError('BAD_MODEL', 'the graph has a cycle', 'the file is not a valid ONNX model');
    return order;
  }

  private producersOfUnchecked(node: NodeProto): number[] {
    return nodeInputs(node)
      .map((name) => this.producer.get(name))
      .filter((p): p is number => p !== undefined);
  }
}
