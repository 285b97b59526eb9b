"""Layers over the functional ops. Dimensions are per TP rank: the checkpoint is already sharded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..quantization.schemes import Scheme, linear_tensors
from . import functional as F
from .module import Module
from .tensor import Parameter, Tensor


class Embedding(Module):
    def __init__(self, num_embeddings: int, dim: int, dtype: str) -> None:
        self.weight = Parameter((num_embeddings, dim), dtype)

    def __call__(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


@dataclass(frozen=True)
class LinearQuant:
    """How a Linear's weights are quantized (quantization/schemes.py lists the tensors)."""
    scheme: Scheme
    group_size: int | None = None   # grouped schemes only


class Linear(Module):
    """`parallel="column"` shards the output features, `"row"` the input features (reduced after).
    With `quant`, the weight is stored quantized and the scales are Parameters too."""

    def __init__(self, in_features: int, out_features: int, dtype: str, *, bias: bool = False,
                 parallel: str | None = None, gather_output: bool = False, out_dtype: str | None = None,
                 quant: LinearQuant | None = None) -> None:
        self.quant = quant
        self.in_features = in_features
        if quant is None:
            self.weight = Parameter((out_features, in_features), dtype)
        else:
            for role, (shape, role_dtype) in linear_tensors(quant.scheme, out_features, in_features, dtype,
                                                            quant.group_size).items():
                setattr(self, role, Parameter(shape, role_dtype))
        self.bias = Parameter((out_features,), dtype) if bias else None
        self.parallel, self.gather_output, self.out_dtype = parallel, gather_output, out_dtype

    def __call__(self, x: Tensor) -> Tensor:
        quant = quant_weights = None
        if self.quant is not None:
            scheme = self.quant.scheme
            quant = {"quant_algo": scheme.quant_algo, "in_features": self.in_features,
                     "group_size": self.quant.group_size if scheme.grouped else self.in_features}
            quant_weights = {role: getattr(self, role) for role in ("weight_scale", "input_scale", "pre_quant_scale")
                             if hasattr(self, role)}
        return F.linear(x, self.weight, self.bias, parallel=self.parallel, gather_output=self.gather_output,
                        out_dtype=self.out_dtype, quant=quant, quant_weights=quant_weights)


def ColumnLinear(in_features: int, out_features: int, dtype: str, **kw: Any) -> Linear:
    return Linear(in_features, out_features, dtype, parallel="column", **kw)


def RowLinear(in_features: int, out_features: int, dtype: str, **kw: Any) -> Linear:
    return Linear(in_features, out_features, dtype, parallel="row", **kw)


class RmsNorm(Module):
    def __init__(self, dim: int, eps: float, dtype: str) -> None:
        self.weight = Parameter((dim,), dtype)
        self.eps = eps

    def __call__(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, self.eps)


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float, dtype: str) -> None:
        self.weight = Parameter((dim,), dtype)
        self.bias = Parameter((dim,), dtype)
        self.eps = eps

    def __call__(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Attention(Module):
    """Multi-head / grouped-query self-attention with optional per-head q/k RMSNorm and RoPE."""

    def __init__(self, *, layer_idx: int, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 dtype: str, qkv_bias: bool, out_bias: bool, qk_norm_eps: float | None,
                 rope: dict[str, Any] | None, quant: LinearQuant | None = None, fp8_kv_cache: bool = False) -> None:
        self.layer_idx, self.num_heads, self.num_kv_heads, self.head_dim = layer_idx, num_heads, num_kv_heads, head_dim
        self.q = ColumnLinear(hidden_size, num_heads * head_dim, dtype, bias=qkv_bias, quant=quant)
        self.k = ColumnLinear(hidden_size, num_kv_heads * head_dim, dtype, bias=qkv_bias, quant=quant)
        self.v = ColumnLinear(hidden_size, num_kv_heads * head_dim, dtype, bias=qkv_bias, quant=quant)
        self.o = RowLinear(num_heads * head_dim, hidden_size, dtype, bias=out_bias, quant=quant)
        self.kv_scale = Parameter((1,), "float32") if fp8_kv_cache else None
        self.q_norm = RmsNorm(head_dim, qk_norm_eps, dtype) if qk_norm_eps is not None else None
        self.k_norm = RmsNorm(head_dim, qk_norm_eps, dtype) if qk_norm_eps is not None else None
        self.rope = rope

    def __call__(self, x: Tensor) -> Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q = F.rope(q, head_dim=self.head_dim, rope=self.rope)
            k = F.rope(k, head_dim=self.head_dim, rope=self.rope)
        a = F.attention(q, k, v, layer_idx=self.layer_idx, num_heads=self.num_heads,
                        num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, kv_scale=self.kv_scale)
        return self.o(a)


class GatedMLP(Module):
    """down(silu(gate(x)) * up(x)): Llama-style."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str, *, bias: bool,
                 quant: LinearQuant | None = None) -> None:
        self.gate = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias, quant=quant)
        self.up = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias, quant=quant)
        self.down = RowLinear(intermediate_size, hidden_size, dtype, bias=bias, quant=quant)

    def __call__(self, x: Tensor) -> Tensor:
        return self.down(F.mul(F.silu(self.gate(x)), self.up(x)))


class MLP(Module):
    """proj(gelu(fc(x))): GPT-2-style."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str, *, bias: bool,
                 quant: LinearQuant | None = None) -> None:
        self.fc = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias, quant=quant)
        self.proj = RowLinear(intermediate_size, hidden_size, dtype, bias=bias, quant=quant)

    def __call__(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu_tanh(self.fc(x)))
