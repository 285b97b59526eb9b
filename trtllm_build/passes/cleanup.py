"""Dead-code removal."""

from __future__ import annotations

from ..graph.ir import Graph
from ..graph.opset import SIDE_EFFECT_OPS


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output, then values and weights nothing uses.

    Ops with side effects (attention writes the KV cache; collectives must run on every rank)
    are always kept. One backward sweep suffices because the node list is topologically ordered.
    """
    g = graph.copy()
    live = set(g.outputs)
    kept = []
    for node in reversed(g.nodes):
        if node.op in SIDE_EFFECT_OPS or live.intersection(node.outputs):
            kept.append(node)
            live.update(node.inputs)
    removed = len(g.nodes) - len(kept)
    g.nodes = kept[::-1]
    used_values = set(g.inputs) | set(g.outputs)
    used_weights = set()
    for node in g.nodes:
        used_values.update(node.inputs, node.outputs)
        used_weights.update(node.weights.values())
    g.values = {k: v for k, v in g.values.items() if k in used_values}
    g.weights = {k: v for k, v in g.weights.items() if k in used_weights}
    g.record_pass("remove_dead_nodes", removed)
    return g
