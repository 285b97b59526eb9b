"""Functional ops of the DSL. Each records one node; shapes are checked here, at trace time."""

from __future__ import annotations

from typing import Any

from ..graph.ir import NUM_OUTPUT_ROWS, TensorType
from .tensor import Parameter, Tensor


def _like(x: Tensor, last: int | None = None, dtype: str | None = None) -> TensorType:
    shape = x.shape if last is None else (*x.shape[:-1], last)
    return TensorType(tuple(shape), dtype or x.dtype)


def _check_last(x: Tensor, size: int, what: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{what}: input last dim {x.shape[-1]} != expected {size}")


def embedding(ids: Tensor, weight: Parameter, *, hint: str | None = None) -> Tensor:
    out = TensorType((*ids.shape, weight.shape[1]), weight.dtype)
    return ids.tracer.op("embedding", [ids], [out], weights={"weight": weight}, hint=hint)[0]


def linear(x: Tensor, weight: Parameter, bias: Parameter | None = None, *, parallel: str | None = None,
           gather_output: bool = False, out_dtype: str | None = None, hint: str | None = None,
           quant: dict[str, Any] | None = None, quant_weights: dict[str, Parameter] | None = None) -> Tensor:
    """y = x @ weight.T + bias. `parallel` ("column" | "row") tells the TP pass where to reduce.

    A quantized linear (`quant` attrs: quant_algo, in_features, group_size) carries its scales as
    extra weights (`quant_weights`: weight_scale, input_scale, pre_quant_scale); it is traced as a
    `linear` and rewritten into its quantized engine op by the passes (passes/quantization.py).
    """
    in_features = quant["in_features"] if quant else weight.shape[1]
    _check_last(x, in_features, f"linear {weight.name}")
    attrs: dict[str, Any] = dict(quant or {})
    if parallel:
        attrs["parallel"] = parallel
    if gather_output:
        attrs["gather_output"] = True
    out = _like(x, weight.shape[0], out_dtype)
    weights = {"weight": weight, "bias": bias, **(quant_weights or {})}
    return x.tracer.op("linear", [x], [out], attrs=attrs, weights=weights, hint=hint)[0]


def rms_norm(x: Tensor, weight: Parameter, eps: float, *, hint: str | None = None) -> Tensor:
    """RMSNorm over chunks of len(weight) of the last dim (a weight of head_dim normalizes per head)."""
    if x.shape[-1] % weight.shape[0]:
        raise ValueError(f"rms_norm {weight.name}: last dim {x.shape[-1]} not a multiple of {weight.shape[0]}")
    return x.tracer.op("rms_norm", [x], [_like(x)], attrs={"eps": eps}, weights={"weight": weight}, hint=hint)[0]


def layer_norm(x: Tensor, weight: Parameter, bias: Parameter, eps: float, *, hint: str | None = None) -> Tensor:
    _check_last(x, weight.shape[0], f"layer_norm {weight.name}")
    return x.tracer.op("layer_norm", [x], [_like(x)], attrs={"eps": eps},
                       weights={"weight": weight, "bias": bias}, hint=hint)[0]


def add(a: Tensor, b: Tensor, *, hint: str | None = None) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"add: shapes {a.shape} and {b.shape} differ")
    return a.tracer.op("add", [a, b], [_like(a)], hint=hint)[0]


def mul(a: Tensor, b: Tensor, *, hint: str | None = None) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"mul: shapes {a.shape} and {b.shape} differ")
    return a.tracer.op("mul", [a, b], [_like(a)], hint=hint)[0]


def silu(x: Tensor, *, hint: str | None = None) -> Tensor:
    return x.tracer.op("silu", [x], [_like(x)], hint=hint)[0]


def gelu_tanh(x: Tensor, *, hint: str | None = None) -> Tensor:
    return x.tracer.op("gelu_tanh", [x], [_like(x)], hint=hint)[0]


def rope(x: Tensor, *, head_dim: int, rope: dict[str, Any], hint: str | None = None) -> Tensor:
    """Rotary embedding (rotate-half / GPT-NeoX layout, as HF Llama) of each head at its token's position."""
    if x.shape[-1] % head_dim:
        raise ValueError(f"rope: last dim {x.shape[-1]} not a multiple of head_dim {head_dim}")
    return x.tracer.op("rope", [x], [_like(x)], attrs={"head_dim": head_dim, **rope}, hint=hint)[0]


def attention(q: Tensor, k: Tensor, v: Tensor, *, layer_idx: int, num_heads: int, num_kv_heads: int,
              head_dim: int, kv_scale: Parameter | None = None, hint: str | None = None) -> Tensor:
    """Causal attention of each request's tokens over its cached and new keys (paged KV cache, GQA).

    Traced with separate q, k, v; the passes fold rope / q-k norm into it and pack q, k, v.
    """
    _check_last(q, num_heads * head_dim, "attention q")
    _check_last(k, num_kv_heads * head_dim, "attention k")
    _check_last(v, num_kv_heads * head_dim, "attention v")
    attrs = {"layer_idx": layer_idx, "num_heads": num_heads, "num_kv_heads": num_kv_heads,
             "head_dim": head_dim, "rope": None}
    return q.tracer.op("attention", [q, k, v], [_like(q)], attrs=attrs, weights={"kv_scale": kv_scale}, hint=hint)[0]


def gather_rows(x: Tensor, *, hint: str | None = None) -> Tensor:
    """The rows of the tokens whose logits the runtime wants (each request's last token; all of
    them for a request that asked for context logits). The runtime passes the row indices."""
    out = TensorType((NUM_OUTPUT_ROWS, *x.shape[1:]), x.dtype)
    return x.tracer.op("gather_rows", [x], [out], hint=hint)[0]
