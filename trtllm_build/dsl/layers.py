"""Layers over the functional ops. Dimensions are per TP rank: the checkpoint is already sharded."""

from __future__ import annotations

from typing import Any

from . import functional as F
from .module import Module
from .tensor import Parameter, Tensor


class Embedding(Module):
    def __init__(self, num_embeddings: int, dim: int, dtype: str) -> None:
        self.weight = Parameter((num_embeddings, dim), dtype)

    def __call__(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


class Linear(Module):
    """`parallel="column"` shards the output features, `"row"` the input features (reduced after)."""

    def __init__(self, in_features: int, out_features: int, dtype: str, *, bias: bool = False,
                 parallel: str | None = None, gather_output: bool = False, out_dtype: str | None = None) -> None:
        self.weight = Parameter((out_features, in_features), dtype)
        self.bias = Parameter((out_features,), dtype) if bias else None
        self.parallel, self.gather_output, self.out_dtype = parallel, gather_output, out_dtype

    def __call__(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias, parallel=self.parallel,
                        gather_output=self.gather_output, out_dtype=self.out_dtype)


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
                 rope: dict[str, Any] | None) -> None:
        self.layer_idx, self.num_heads, self.num_kv_heads, self.head_dim = layer_idx, num_heads, num_kv_heads, head_dim
        self.q = ColumnLinear(hidden_size, num_heads * head_dim, dtype, bias=qkv_bias)
        self.k = ColumnLinear(hidden_size, num_kv_heads * head_dim, dtype, bias=qkv_bias)
        self.v = ColumnLinear(hidden_size, num_kv_heads * head_dim, dtype, bias=qkv_bias)
        self.o = RowLinear(num_heads * head_dim, hidden_size, dtype, bias=out_bias)
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
                        num_kv_heads=self.num_kv_heads, head_dim=self.head_dim)
        return self.o(a)


class GatedMLP(Module):
    """down(silu(gate(x)) * up(x)): Llama-style."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str, *, bias: bool) -> None:
        self.gate = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias)
        self.up = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias)
        self.down = RowLinear(intermediate_size, hidden_size, dtype, bias=bias)

    def __call__(self, x: Tensor) -> Tensor:
        return self.down(F.mul(F.silu(self.gate(x)), self.up(x)))


class MLP(Module):
    """proj(gelu(fc(x))): GPT-2-style."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str, *, bias: bool) -> None:
        self.fc = ColumnLinear(hidden_size, intermediate_size, dtype, bias=bias)
        self.proj = RowLinear(intermediate_size, hidden_size, dtype, bias=bias)

    def __call__(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu_tanh(self.fc(x)))
