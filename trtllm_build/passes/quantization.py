"""Quantization passes: fold pre-quant scales into the ops before them, lower quantized linears to their
engine ops, and fuse activation quantization into the op that produces the activation."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..graph.ir import Graph, Node, TensorType, fresh_name
from ..quantization.schemes import scheme_of

NORMS = ("rms_norm", "add_rms_norm", "all_reduce_add_rms_norm", "layer_norm", "add_layer_norm")
# Ops that can write their (first) output quantized, per op set v2.
QUANTIZING_PRODUCERS = NORMS + ("silu_mul", "gelu_tanh")


def fold_pre_quant_scales(graph: Graph) -> Graph:
    """Fold a quantized linear's pre_quant_scale (SmoothQuant's 1/s, AWQ's scale) into the op
    that produces its input.

    Matches linear(norm(x)) where the linear has a `pre_quant_scale` s over the whole hidden dim
    and is the norm's only reader (after fuse_qkv / fuse_gate_up, q/k/v and gate/up are one
    linear). norm(x) * s = x_hat * (w * s) (+ b * s for LayerNorm), so the norm's weight (and
    bias) absorb s, rounded once to their dtype, and the multiply disappears.

    Also a weight-only linear (AWQ's down_proj) reading silu_mul(gate_up(x)), with gate_up
    weight-only too: silu(g) * u * s = silu(g) * (u * s), and u's row n scaled by s[n] is that
    row's dequantization scales (and bias) times s[n], so gate_up's up rows absorb s (rounded
    once to the scales' dtype) and down's GEMV runs without its per-input multiply.
    Inputs produced by anything else (attention) keep their scale: the quantizing op or the
    weight-only GEMM applies it. So does a linear whose fold would turn a normal value of the
    absorbing weight subnormal or infinite in its dtype (float16 AWQ scales times a small s).
    """
    g = graph.copy()
    producers = g.producers()
    folds = 0
    for node in g.nodes:
        if node.op != "linear" or "pre_quant_scale" not in node.weights:
            continue
        scale = g.weights[node.weights["pre_quant_scale"]].astype(np.float32)
        producer = producers.get(node.inputs[0])
        if (producer is None or producer.outputs[0] != node.inputs[0]
                or not g.sole_reader(node.inputs[0], node)):
            continue
        if producer.op in NORMS:
            target, factors = producer, {"weight": scale, "bias": scale}
        elif producer.op == "silu_mul" and _weight_only(node):
            # 8B int4_awq_lmh decode step 2.251 -> 2.212 ms (H100, session 22): down's GEMV without
            # the multiply, on the 16 x 2 kernel bounded to keep its weight loads ahead of its mmas
            gate_up = producers.get(producer.inputs[0])
            if (gate_up is None or gate_up.op != "linear" or not _weight_only(gate_up)
                    or not g.sole_reader(producer.inputs[0], producer)):
                continue
            up_rows = np.concatenate([np.ones_like(scale), scale])  # [gate | up]: s scales the up half
            target, factors = gate_up, {"weight_scale": up_rows[:, None], "bias": up_rows}
        else:
            continue
        factors = {role: f for role, f in factors.items() if role in target.weights}
        if not all(_stays_normal(g.weights[target.weights[role]], f) for role, f in factors.items()):
            continue  # the linear keeps its pre_quant_scale (its quantize or GEMM multiplies)
        for role, factor in factors.items():
            _scale_weight(g, target, role, factor)
        del node.weights["pre_quant_scale"]
        folds += 1
    g.record_pass("fold_pre_quant_scales", folds)
    return g


def _weight_only(linear: Node) -> bool:
    algo = linear.attrs.get("quant_algo")
    return algo is not None and scheme_of(algo).weight_only


def _stays_normal(w: np.ndarray, factor: np.ndarray) -> bool:
    """Whether w * factor, rounded to w's dtype, keeps every normal element of w normal and finite.
    A float16 AWQ scale (~1e-3) times a small s lands among float16's subnormals (under 6.1e-5),
    which keep only a few significant bits: the fold would cost that row its precision."""
    info = ml_dtypes.finfo(w.dtype)
    w32 = np.abs(w.astype(np.float32))
    product = np.abs(w32 * factor)
    was_normal = w32 >= info.tiny
    return bool(np.all(~was_normal | ((product >= info.tiny) & (product <= info.max))))


def _scale_weight(g: Graph, node: Node, role: str, factor: np.ndarray) -> None:
    """node's weight `role` times `factor` (broadcast), rounded once to its dtype, as a new weight."""
    w = g.weights[node.weights[role]]
    name = fresh_name(g.weights, f"{node.weights[role]}.prequant")
    g.weights[name] = (w.astype(np.float32) * factor).astype(w.dtype)
    node.weights[role] = name


def quantize_linears(graph: Graph) -> Graph:
    """Lower each quantized `linear` (one with a quant_algo attr) to its engine op.

    FP8 / INT8 (W8A8): the GEMM reads a quantized input, so a `quantize` op goes in front with
    out_scale = input_scale, or input_scale / pre_quant_scale per channel when a pre_quant_scale
    is left ((x * p) / s = x / (s / p)); fuse_activation_quant then moves it into the producer.
    Weight-only (W8A16 / W4A16): `weight_only_linear`, keeping any pre_quant_scale. Linears
    without quant_algo (lm_head) stay `linear`.
    """
    g = graph.copy()
    nodes: list[Node] = []
    lowered = 0
    for node in g.nodes:
        algo = node.attrs.get("quant_algo")
        if node.op != "linear" or algo is None:
            nodes.append(node)
            continue
        scheme = scheme_of(algo)
        base = {key: node.attrs[key] for key in ("parallel", "gather_output") if key in node.attrs}
        if scheme.weight_only:
            node.op = "weight_only_linear"
            node.attrs = {**base, "weight_bits": scheme.weight_bits, "group_size": node.attrs["group_size"],
                          "weight_layout": "row_major"}
            nodes.append(node)
        else:
            x = node.inputs[0]
            scale_name = node.weights["input_scale"]
            if "pre_quant_scale" in node.weights:
                pre = g.weights[node.weights.pop("pre_quant_scale")].astype(np.float32)
                scale_name = fresh_name(g.weights, node.weights["input_scale"] + ".per_channel")
                g.weights[scale_name] = (g.weights[node.weights["input_scale"]].astype(np.float32) / pre
                                         ).astype(np.float32)
            quantized = fresh_name(g.values, x + ".quant")
            g.values[quantized] = TensorType(g.values[x].shape, scheme.activation_dtype)
            nodes.append(Node("quantize", [x], [quantized], {}, {"out_scale": scale_name}))
            node.op = "fp8_linear" if scheme.activation_dtype == "float8_e4m3fn" else "int8_linear"
            node.attrs = base
            node.inputs = [quantized]
            nodes.append(node)
        lowered += 1
    g.nodes = nodes
    g.record_pass("quantize_linears", lowered)
    return g


def fuse_activation_quant(graph: Graph) -> Graph:
    """Fuse a `quantize` into the norm or activation that produces its input.

    Matches quantize(y) where y is the first output of an rms_norm / layer_norm (plain or with the
    residual add), silu_mul or gelu_tanh, and the quantize is y's only reader. The producer then
    quantizes its float32 result directly (op set v2's out_scale), so the activation is written
    once, in 1 byte per element, instead of written, read back and written again. The quantize
    after attention (the input of o_proj) stays a separate op.
    """
    g = graph.copy()
    producers = g.producers()
    fused = 0
    for node in list(g.nodes):
        if node.op != "quantize":
            continue
        producer = producers.get(node.inputs[0])
        if (producer is None or producer.op not in QUANTIZING_PRODUCERS or producer.outputs[0] != node.inputs[0]
                or not g.sole_reader(node.inputs[0], node)):
            continue
        producer.outputs[0] = node.outputs[0]
        producer.weights["out_scale"] = node.weights["out_scale"]
        del g.values[node.inputs[0]]
        g.nodes.remove(node)
        fused += 1
    g.record_pass("fuse_activation_quant", fused)
    return g


__all__ = ["fold_pre_quant_scales", "quantize_linears", "fuse_activation_quant"]
