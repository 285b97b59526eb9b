"""The op set: the contract between the builder, the engine file and the runtime's kernels.

Only ops named in `ENGINE_OPS` may reach an engine; the DSL may emit `TRACE_ONLY_OPS`, which
the passes always rewrite away (`silu`/`mul` into `silu_mul`, `rope` into `attention`).
Any change to an op's meaning bumps `OPSET_VERSION`. docs/opset.md describes each op.
"""

from __future__ import annotations

from .ir import Graph

OPSET_VERSION = 3   # v3: all_reduce_add_rms_norm; v2: quantization (quantize, fp8_linear, int8_linear,
                    # weight_only_linear, quantized outputs of norms and activations, FP8 KV cache)
QUANTIZED_DTYPES = ("float8_e4m3fn", "int8")

# op -> (number of inputs, number of outputs, weight roles it may carry). `out_scale` is present
# exactly when the op's first output is of a QUANTIZED_DTYPES dtype.
ENGINE_OPS: dict[str, tuple[int, int, frozenset[str]]] = {
    "embedding": (1, 1, frozenset({"weight"})),
    "linear": (1, 1, frozenset({"weight", "bias"})),
    "rms_norm": (1, 1, frozenset({"weight", "out_scale"})),
    "layer_norm": (1, 1, frozenset({"weight", "bias", "out_scale"})),
    "add_rms_norm": (2, 2, frozenset({"weight", "out_scale"})),
    "add_layer_norm": (2, 2, frozenset({"weight", "bias", "out_scale"})),
    "add": (2, 1, frozenset()),
    "silu_mul": (1, 1, frozenset({"out_scale"})),
    "gelu_tanh": (1, 1, frozenset({"out_scale"})),
    "quantize": (1, 1, frozenset({"out_scale"})),
    "fp8_linear": (1, 1, frozenset({"weight", "weight_scale", "input_scale", "bias"})),
    "int8_linear": (1, 1, frozenset({"weight", "weight_scale", "input_scale", "bias"})),
    "weight_only_linear": (1, 1, frozenset({"weight", "weight_scale", "pre_quant_scale", "bias"})),
    "attention": (1, 1, frozenset({"q_norm", "k_norm", "kv_scale"})),
    "all_reduce": (1, 1, frozenset({"bias"})),
    "all_reduce_add_rms_norm": (2, 2, frozenset({"weight", "out_scale"})),
    "all_gather": (1, 1, frozenset()),
    "gather_rows": (1, 1, frozenset()),
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
        n_in, n_out, roles = ENGINE_OPS[node.op]
        if len(node.inputs) != n_in or len(node.outputs) != n_out:
            raise GraphError(f"{where}: expects {n_in} inputs / {n_out} outputs, "
                             f"got {len(node.inputs)} / {len(node.outputs)}")
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
        defined.update(node.outputs)
    for name in graph.outputs:
        if name not in defined:
            raise GraphError(f"graph output {name!r} is never produced")
