"""The op set: the contract between the builder, the engine file and the runtime's kernels.

Only ops named in `ENGINE_OPS` may reach an engine; the DSL may emit `TRACE_ONLY_OPS`, which
the passes always rewrite away (`silu`/`mul` into `silu_mul`, `rope` into `attention`).
Any change to an op's meaning bumps `OPSET_VERSION`. docs/opset.md describes each op.
"""

from __future__ import annotations

from .ir import Graph, Node

OPSET_VERSION = 4   # v4: weight_only_linear's fused input norm (norm_weight) and gated activation (silu_mul);
                    # v3: all_reduce_add_rms_norm; v2: quantization (quantize, fp8_linear, int8_linear,
                    # weight_only_linear, quantized outputs of norms and activations, FP8 KV cache)
QUANTIZED_DTYPES = ("float8_e4m3fn", "int8")
WEIGHT_ONLY_ACTIVATIONS = ("silu_mul",)

# op -> (the (inputs, outputs) counts it may have, weight roles it may carry). `out_scale` is present
# exactly when the op's first output is of a QUANTIZED_DTYPES dtype.
ONE_TO_ONE = frozenset({(1, 1)})
TWO_TO_TWO = frozenset({(2, 2)})
ENGINE_OPS: dict[str, tuple[frozenset[tuple[int, int]], frozenset[str]]] = {
    "embedding": (ONE_TO_ONE, frozenset({"weight"})),
    "linear": (ONE_TO_ONE, frozenset({"weight", "bias"})),
    "rms_norm": (ONE_TO_ONE, frozenset({"weight", "out_scale"})),
    "layer_norm": (ONE_TO_ONE, frozenset({"weight", "bias", "out_scale"})),
    "add_rms_norm": (TWO_TO_TWO, frozenset({"weight", "out_scale"})),
    "add_layer_norm": (TWO_TO_TWO, frozenset({"weight", "bias", "out_scale"})),
    "add": (frozenset({(2, 1)}), frozenset()),
    "silu_mul": (ONE_TO_ONE, frozenset({"out_scale"})),
    "gelu_tanh": (ONE_TO_ONE, frozenset({"out_scale"})),
    "quantize": (ONE_TO_ONE, frozenset({"out_scale"})),
    "fp8_linear": (ONE_TO_ONE, frozenset({"weight", "weight_scale", "input_scale", "bias"})),
    "int8_linear": (ONE_TO_ONE, frozenset({"weight", "weight_scale", "input_scale", "bias"})),
    # v4: a, b -> y, sum when it carries a norm_weight (add_rms_norm fused in front)
    "weight_only_linear": (ONE_TO_ONE | TWO_TO_TWO,
                           frozenset({"weight", "weight_scale", "pre_quant_scale", "bias", "norm_weight"})),
    "attention": (ONE_TO_ONE, frozenset({"q_norm", "k_norm", "kv_scale"})),
    "all_reduce": (ONE_TO_ONE, frozenset({"bias"})),
    "all_reduce_add_rms_norm": (TWO_TO_TWO, frozenset({"weight", "out_scale"})),
    "all_gather": (ONE_TO_ONE, frozenset()),
    "gather_rows": (ONE_TO_ONE, frozenset()),
}

TRACE_ONLY_OPS = frozenset({"silu", "mul", "rope"})

# Ops with effects beyond their outputs (the KV cache, collectives): never removed as dead.
SIDE_EFFECT_OPS = frozenset({"attention", "all_reduce", "all_reduce_add_rms_norm", "all_gather"})


class GraphError(ValueError):
    """The graph breaks the op-set contract; the message names the node."""


def verify_engine_graph(graph: Graph) -> None:
    """Check that `graph` uses only engine ops, with the right arity, and is topologically ordered."""
    defined = set(graph.inputs)
    for index, node in enumerate(graph.nodes):
        where = f"node {index} ({node.op} -> {node.outputs})"
        if node.op not in ENGINE_OPS:
            raise GraphError(f"{where}: op {node.op!r} is not in op set v{OPSET_VERSION}")
        arities, roles = ENGINE_OPS[node.op]
        if (len(node.inputs), len(node.outputs)) not in arities:
            allowed = " or ".join(f"{n_in} inputs / {n_out} outputs" for n_in, n_out in sorted(arities))
            raise GraphError(f"{where}: expects {allowed}, got {len(node.inputs)} / {len(node.outputs)}")
        if not set(node.weights) <= roles:
            raise GraphError(f"{where}: unknown weight roles {sorted(set(node.weights) - roles)}")
        for name in node.inputs:
            if name not in defined:
                raise GraphError(f"{where}: input {name!r} is used before it is defined")
        for name in node.weights.values():
            if name not in graph.weights:
                raise GraphError(f"{where}: weight {name!r} is missing")
        quantized_out = graph.values[node.outputs[0]].dtype in QUANTIZED_DTYPES
        if quantized_out != ("out_scale" in node.weights) and node.op not in ("fp8_linear", "int8_linear"):
            raise GraphError(f"{where}: a quantized output needs an out_scale weight and only one has it")
        want_in = {"fp8_linear": "float8_e4m3fn", "int8_linear": "int8"}.get(node.op)
        if want_in and graph.values[node.inputs[0]].dtype != want_in:
            raise GraphError(f"{where}: input must be {want_in}, got {graph.values[node.inputs[0]].dtype}")
        if node.op == "weight_only_linear":
            _verify_weight_only_fusions(graph, node, where)
        defined.update(node.outputs)
    for name in graph.outputs:
        if name not in defined:
            raise GraphError(f"graph output {name!r} is never produced")


def _verify_weight_only_fusions(graph: Graph, node: Node, where: str) -> None:
    """Op set v4: the fused input norm (norm_weight [K] with a norm_eps; a second input, the residual,
    only with it) and the gated activation (silu_mul: N even, the output N / 2 columns)."""
    norm = "norm_weight" in node.weights
    if norm != ("norm_eps" in node.attrs):
        raise GraphError(f"{where}: a norm_weight needs a norm_eps attr and only one has it")
    if len(node.inputs) == 2 and not norm:
        raise GraphError(f"{where}: a second input (the residual) needs a norm_weight")
    k = graph.values[node.inputs[0]].shape[-1]
    if norm and graph.weights[node.weights["norm_weight"]].shape != (k,):
        raise GraphError(f"{where}: norm_weight must be [{k}], got "
                         f"{list(graph.weights[node.weights['norm_weight']].shape)}")
    activation = node.attrs.get("activation")
    if activation is not None and activation not in WEIGHT_ONLY_ACTIVATIONS:
        raise GraphError(f"{where}: activation {activation!r} is not one of {', '.join(WEIGHT_ONLY_ACTIVATIONS)}")
    n, out_cols = graph.weights[node.weights["weight"]].shape[0], graph.values[node.outputs[0]].shape[-1]
    if activation == "silu_mul" and (n % 2 or out_cols != n // 2):
        raise GraphError(f"{where}: activation silu_mul needs an even N and an output of N / 2 columns; "
                         f"N = {n}, output {out_cols}")
