"""Fusion passes: each rewrites a matched pattern into fewer, larger ops with the same math."""

from __future__ import annotations

import numpy as np

from ..graph.ir import Graph, Node, TensorType, fresh_name


def fold_attention_inputs(graph: Graph) -> Graph:
    """Fold per-head q/k RMSNorm and RoPE into the attention op that consumes them.

    Matches attention(rope(rms_norm?(q)), rope(rms_norm?(k)), v) where each folded node feeds only
    this attention and q and k get the same rope. The attention op applies them in the same order
    (norm, then rope) to the q and k it reads, so the math is unchanged and q/k make one fewer
    round trip through memory.
    """
    g = graph.copy()
    producers = g.producers()
    folds = 0
    for node in list(g.nodes):
        if node.op != "attention" or len(node.inputs) != 3:
            continue
        q, k, v = node.inputs
        pq, pk = producers.get(q), producers.get(k)
        if (pq and pk and pq.op == pk.op == "rope" and pq.attrs == pk.attrs
                and g.sole_reader(q, node) and g.sole_reader(k, node)):
            node.attrs["rope"] = {key: val for key, val in pq.attrs.items() if key != "head_dim"}
            g.nodes = [n for n in g.nodes if n is not pq and n is not pk]
            q, k = pq.inputs[0], pk.inputs[0]
            node.inputs = [q, k, v]  # the norms below must be read by this node now
            folds += 1
        nq, nk = producers.get(q), producers.get(k)
        head_dim = node.attrs["head_dim"]
        if (nq and nk and nq.op == nk.op == "rms_norm" and nq.attrs == nk.attrs
                and g.weights[nq.weights["weight"]].shape == (head_dim,)
                and g.weights[nk.weights["weight"]].shape == (head_dim,)
                and g.sole_reader(q, node) and g.sole_reader(k, node)):
            node.weights.update(q_norm=nq.weights["weight"], k_norm=nk.weights["weight"])
            node.attrs["qk_norm_eps"] = nq.attrs["eps"]
            g.nodes = [n for n in g.nodes if n is not nq and n is not nk]
            q, k = nq.inputs[0], nk.inputs[0]
            folds += 1
        node.inputs = [q, k, v]
    g.record_pass("fold_attention_inputs", folds)
    return g


# Quantized linears (traced as `linear`): scales per output row stack like the weight rows; the
# per-tensor and per-input ones (input_scale, FP8's weight_scale, pre_quant_scale) must be equal
# in every fused linear, and the fused GEMM keeps one copy.
_ROW_STACKED = ("weight", "bias")


def _stacks_by_row(g: Graph, node: Node, role: str) -> bool:
    if role in _ROW_STACKED:
        return True
    rows = g.weights[node.weights["weight"]].shape[0]
    return role == "weight_scale" and g.weights[node.weights[role]].shape[0] == rows and rows > 1


def _fuse_linears(g: Graph, linears: list[Node], weight_name: str) -> Node:
    """One linear whose weight (and bias, per-row scale) rows are the given linears' stacked in order."""
    weights = {}
    for role in linears[0].weights:
        name = fresh_name(g.weights, f"{weight_name}.{role}")
        if _stacks_by_row(g, linears[0], role):
            g.weights[name] = np.concatenate([g.weights[n.weights[role]] for n in linears], axis=0)
        else:
            g.weights[name] = g.weights[linears[0].weights[role]]
        weights[role] = name
    fused_w = g.weights[weights["weight"]]
    x = linears[0].inputs[0]
    out = fresh_name(g.values, weight_name)
    g.values[out] = TensorType((*g.values[x].shape[:-1], fused_w.shape[0]), g.values[linears[0].outputs[0]].dtype)
    return Node("linear", [x], [out], dict(linears[0].attrs), weights)


def _shared_scales_equal(g: Graph, nodes: list[Node]) -> bool:
    first = nodes[0]
    return all(np.array_equal(g.weights[n.weights[role]], g.weights[first.weights[role]])
               for role in first.weights if not _stacks_by_row(g, first, role) for n in nodes)


def _compatible_linears(g: Graph, nodes: list[Node | None], user: Node) -> bool:
    if any(n is None or n.op != "linear" for n in nodes):
        return False
    first = nodes[0]
    return all(n.inputs == first.inputs and n.attrs == first.attrs
               and set(n.weights) == set(first.weights)
               and g.values[n.outputs[0]].dtype == g.values[first.outputs[0]].dtype
               and g.sole_reader(n.outputs[0], user) for n in nodes) and _shared_scales_equal(g, nodes)


def _prefix(weight_name: str) -> str:
    """'layers.3.attn.q.weight' -> 'layers.3.attn'"""
    return weight_name.rsplit(".", 2)[0]


def fuse_qkv(graph: Graph) -> Graph:
    """Fuse the Q, K and V projections of an attention into one GEMM with stacked weights.

    Matches attention(linear_q(x), linear_k(x), linear_v(x)) with the same input, attributes and
    bias presence. The fused output is [q | k | v] along the last dim, which is the packed layout
    the engine's attention op reads; one GEMM reads x once instead of three times.
    """
    g = graph.copy()
    producers = g.producers()
    fused = 0
    for node in list(g.nodes):
        if node.op != "attention" or len(node.inputs) != 3:
            continue
        linears = [producers.get(name) for name in node.inputs]
        if not _compatible_linears(g, linears, node):
            continue
        qkv = _fuse_linears(g, linears, _prefix(linears[0].weights["weight"]) + ".qkv")
        g.nodes[g.nodes.index(linears[0])] = qkv
        g.nodes = [n for n in g.nodes if n is not linears[1] and n is not linears[2]]
        node.inputs = [qkv.outputs[0]]
        fused += 1
    g.record_pass("fuse_qkv", fused)
    return g


def fuse_gate_up(graph: Graph) -> Graph:
    """Fuse gate and up projections into one GEMM followed by a fused SiLU·mul.

    Matches mul(silu(linear_gate(x)), linear_up(x)). The fused GEMM writes [gate | up] along the
    last dim; `silu_mul` computes silu(first half) * second half, so the product never makes a
    separate round trip through memory.
    """
    g = graph.copy()
    producers = g.producers()
    fused = 0
    for node in list(g.nodes):
        if node.op != "mul":
            continue
        act = producers.get(node.inputs[0])
        if act is None or act.op != "silu" or not g.sole_reader(act.outputs[0], node):
            continue
        gate, up = producers.get(act.inputs[0]), producers.get(node.inputs[1])
        if gate is None or not g.sole_reader(gate.outputs[0], act) or not _compatible_linears(g, [up], node):
            continue
        if not (gate.op == "linear" and gate.inputs == up.inputs and gate.attrs == up.attrs
                and set(gate.weights) == set(up.weights) and _shared_scales_equal(g, [gate, up])):
            continue
        gate_up = _fuse_linears(g, [gate, up], _prefix(gate.weights["weight"]) + ".gate_up")
        g.nodes[g.nodes.index(gate)] = gate_up
        g.nodes[g.nodes.index(node)] = Node("silu_mul", [gate_up.outputs[0]], list(node.outputs))
        g.nodes = [n for n in g.nodes if n is not up and n is not act]
        fused += 1
    g.record_pass("fuse_gate_up", fused)
    return g


def fuse_residual_norm(graph: Graph) -> Graph:
    """Fuse a residual add into the norm that reads it: norm(a + b) -> add_norm(a, b) = (normed, a + b).

    Matches rms_norm / layer_norm over the full hidden dim whose input comes from `add`. The sum
    stays an output because the next residual add reads it; the fused op reads a and b once and
    writes both results in one pass. Placed where the add was, so every user of the sum still
    comes after it.
    """
    g = graph.copy()
    producers = g.producers()
    consumers = g.consumers()
    fused = 0
    for norm in list(g.nodes):
        if norm.op not in ("rms_norm", "layer_norm"):
            continue
        add = producers.get(norm.inputs[0])
        if add is None or add.op != "add":
            continue
        if g.weights[norm.weights["weight"]].shape[0] != g.values[norm.inputs[0]].shape[-1]:
            continue  # a per-head norm is not a residual norm
        total = add.outputs[0]
        if sum(1 for n in consumers[total] if n.op in ("rms_norm", "layer_norm")) > 1:
            continue  # two norms of one sum: fusing one would duplicate the add
        fused_node = Node(f"add_{norm.op}", list(add.inputs), [norm.outputs[0], total],
                          dict(norm.attrs), dict(norm.weights))
        g.nodes[g.nodes.index(add)] = fused_node
        g.nodes.remove(norm)
        fused += 1
    g.record_pass("fuse_residual_norm", fused)
    return g


__all__ = ["fold_attention_inputs", "fuse_qkv", "fuse_gate_up", "fuse_residual_norm"]
