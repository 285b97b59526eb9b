"""Tensor-parallel collectives, placed from the layers' `parallel` attributes."""

from __future__ import annotations

from ..graph.ir import Graph, Node, TensorType, fresh_name


def insert_tp_collectives(graph: Graph) -> Graph:
    """After each row-parallel linear insert an all-reduce; after a column-parallel linear with
    `gather_output` (lm_head, sharded along the vocab) an all-gather along the last dim.

    A row-parallel linear computes a partial sum of its output on each rank; its bias must be added
    once, so it moves onto the all-reduce, which adds it after the sum. No-op when tp_size is 1.
    """
    tp_size = int(graph.meta.get("tp_size", 1))
    g = graph.copy()
    inserted = 0
    if tp_size > 1:
        nodes: list[Node] = []
        for node in g.nodes:
            nodes.append(node)
            if node.op != "linear":
                continue
            out = node.outputs[0]
            local = g.values[out]
            if node.attrs.get("parallel") == "row":
                partial = fresh_name(g.values, out + ".partial")
                g.values[partial] = local
                reduce_weights = {"bias": node.weights.pop("bias")} if "bias" in node.weights else {}
                node.outputs = [partial]
                nodes.append(Node("all_reduce", [partial], [out], {}, reduce_weights))
                inserted += 1
            elif node.attrs.get("parallel") == "column" and node.attrs.get("gather_output"):
                shard = fresh_name(g.values, out + ".shard")
                g.values[shard] = local
                g.values[out] = TensorType((*local.shape[:-1], local.shape[-1] * tp_size), local.dtype)
                node.outputs = [shard]
                nodes.append(Node("all_gather", [shard], [out], {"tp_size": tp_size}))
                inserted += 1
        g.nodes = nodes
    g.record_pass("insert_tp_collectives", inserted)
    return g


def fuse_all_reduce_norm(graph: Graph) -> Graph:
    """all_reduce(p) -> x, add_rms_norm(x, r) -> (normed, sum) becomes one
    all_reduce_add_rms_norm(p, r) -> (normed, sum) where x feeds nothing else and the all-reduce
    adds no bias: the reduction, the residual add and the norm in one pass over the row (one
    kernel where the backend sums through peer memory). Same math: the sum over the ranks is
    rounded once, then added to the residual and rounded again, as the two ops do."""
    g = graph.copy()
    producers = g.producers()
    fused = 0
    for norm in list(g.nodes):
        if norm.op != "add_rms_norm":
            continue
        for side in (0, 1):
            reduce = producers.get(norm.inputs[side])
            reduced = norm.inputs[side]
            if reduce is not None and reduce.op == "all_reduce" and not reduce.weights and g.sole_reader(reduced, norm):
                break
        else:
            continue
        fused_node = Node("all_reduce_add_rms_norm", [reduce.inputs[0], norm.inputs[1 - side]], list(norm.outputs),
                          dict(norm.attrs), dict(norm.weights))
        g.nodes[g.nodes.index(norm)] = fused_node
        g.nodes.remove(reduce)
        del g.values[reduced]
        fused += 1
    g.record_pass("fuse_all_reduce_norm", fused)
    return g
