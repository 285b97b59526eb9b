"""Target-specific weight layouts: the CUDA weight-only GEMM's arrangement of int8 / int4 weights.

`weight_only_linear` weights come out of quantization in the op set's logical layout
("row_major": int8 [N, K], or int4 packed two per byte, even k in the low nibble, two's
complement). The CUDA kernel (plugins/gemm/weight_only_cuda.cu) dequantizes 16-byte vectors in
registers with paired 16-bit arithmetic, which wants the bits arranged differently; doing that
once here costs nothing at run time. Layout "cuda_k_interleaved_v1" (docs/opset.md):

- every value in offset binary, u = q + 128 (int8) or q + 8 (int4), stored as uint8;
- int4: each little-endian 32-bit word holds 8 consecutive inputs, input e in nibble
  NIBBLE_OF_INPUT[e] = (e % 2) * 4 + e // 2, so inputs 2j and 2j + 1 sit at bits 4j and 16 + 4j;
- rows stay rows ([N, K] or [N, K / 2] bytes); weight_scale [N, K / G] is unchanged.

The values are the same integers, so the op computes the same y; only the CUDA backend reads this
layout (the CPU backend rejects it).
"""

from __future__ import annotations

import numpy as np

from ..graph.ir import Graph
from ..graph.opset import GraphError
from ..quantization.numerics import pack_int4, unpack_int4

CUDA_WEIGHT_LAYOUT = "cuda_k_interleaved_v1"
NIBBLE_OF_INPUT = tuple((e % 2) * 4 + e // 2 for e in range(8))   # (0, 4, 1, 5, 2, 6, 3, 7)
INPUTS_PER_VECTOR = {8: 16, 4: 32}   # inputs in one 16-byte weight vector of the kernel


def to_cuda_layout(weight: np.ndarray, bits: int) -> np.ndarray:
    """Row-major int8 [N, K] or packed int4 uint8 [N, K/2] -> the CUDA layout, uint8 of the same shape."""
    if bits == 8:
        return np.ascontiguousarray(np.asarray(weight, np.int8).view(np.uint8) ^ np.uint8(0x80))
    q = unpack_int4(weight)
    n, k = q.shape
    if k % 8:
        raise ValueError(f"int4 weights need K divisible by 8 for the CUDA layout, got K = {k}")
    u = (q.astype(np.int16) + 8).astype(np.uint32).reshape(n, k // 8, 8)
    words = np.zeros((n, k // 8), np.uint32)
    for e, nibble in enumerate(NIBBLE_OF_INPUT):
        words |= u[:, :, e] << np.uint32(4 * nibble)
    return np.ascontiguousarray(words.astype("<u4")).view(np.uint8).reshape(n, k // 2)


def from_cuda_layout(weight: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of to_cuda_layout: back to the op set's row-major layout."""
    w = np.ascontiguousarray(weight, np.uint8)
    if bits == 8:
        return (w ^ np.uint8(0x80)).view(np.int8)
    n = w.shape[0]
    words = w.reshape(n, -1).view("<u4")
    u = np.stack([(words >> np.uint32(4 * nibble)) & np.uint32(0xF) for nibble in NIBBLE_OF_INPUT], axis=-1)
    q = (u.astype(np.int16) - 8).astype(np.int8).reshape(n, -1)
    return pack_int4(q)


def relayout_weight_only_for_cuda(graph: Graph) -> Graph:
    """Rewrite every row-major `weight_only_linear` weight into CUDA_WEIGHT_LAYOUT (target cuda only).

    Matches weight_only_linear with weight_layout "row_major"; its `weight` is replaced by the same
    integers in the CUDA layout and weight_layout names it. The kernel reads 16-byte vectors of one
    group, so K and group_size must be multiples of 16 (int8) / 32 (int4) inputs: anything else is
    an error naming the layer, not a slow path.
    """
    g = graph.copy()
    done: set[str] = set()
    count = 0
    for node in g.nodes:
        if node.op != "weight_only_linear" or node.attrs.get("weight_layout") != "row_major":
            continue
        bits, group = int(node.attrs["weight_bits"]), int(node.attrs["group_size"])
        name = node.weights["weight"]
        if name in done:
            raise GraphError(f"weight {name} is shared by two weight_only_linear ops; cannot relayout it twice")
        w = g.weights[name]
        k = w.shape[1] * (2 if bits == 4 else 1)
        per_vec = INPUTS_PER_VECTOR[bits]
        if k % per_vec or group % per_vec or k % group:
            raise GraphError(f"weight_only_linear {node.outputs[0]}: int{bits} with K = {k}, group_size = {group} "
                             f"cannot run on CUDA: K and group_size must be multiples of {per_vec}")
        g.weights[name] = to_cuda_layout(w, bits)
        node.attrs["weight_layout"] = CUDA_WEIGHT_LAYOUT
        done.add(name)
        count += 1
    g.record_pass("relayout_weight_only_for_cuda", count)
    return g


__all__ = ["CUDA_WEIGHT_LAYOUT", "to_cuda_layout", "from_cuda_layout", "relayout_weight_only_for_cuda"]
