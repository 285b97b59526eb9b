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

Layout "cuda_mma_tiles_v1", chosen wherever N % 16 == 0 and K, G are multiples of the tile's inputs
(64 for int4, 32 for int8: the 8B model's layers, AWQ g64 / g128, per channel): the same offset-binary
values ordered as the A operand of the tensor cores' mma.m16n8k16, so that the GEMV runs the products
on the tensor cores and a batch of 2..16 decode rows costs about what one does. A tile is 512 bytes,
16 rows x TILE_INPUTS[bits] inputs, tile (r, c) at (r * K/TI + c) * 512; lane l = 4g + t owns bytes
16l..16l+15 (four little-endian 32-bit words):
- int4 (16 x 64, four mmas): word j holds, with kk = 64c + 16t + 4j, pair p in nibbles p (first
  input) and p + 4 (second): p0 = row g, inputs kk, kk+1; p1 = row g+8, kk, kk+1; p2 = row g, kk+2,
  kk+3; p3 = row g+8, kk+2, kk+3;
- int8 (16 x 32, two mmas): words 2j and 2j + 1 hold rows g and g + 8, inputs kk..kk+3 in bytes
  0..3, with kk = 32c + 8t + 4j.
The array keeps its shape ([N, K / 2] or [N, K]).

The values are the same integers, so the op computes the same y; only the CUDA backend reads these
layouts (the CPU backend rejects them).
"""

from __future__ import annotations

import numpy as np

from ..graph.ir import Graph
from ..graph.opset import GraphError
from ..quantization.numerics import pack_int4, unpack_int4

CUDA_WEIGHT_LAYOUT = "cuda_k_interleaved_v1"
CUDA_MMA_TILE_LAYOUT = "cuda_mma_tiles_v1"
NIBBLE_OF_INPUT = tuple((e % 2) * 4 + e // 2 for e in range(8))   # (0, 4, 1, 5, 2, 6, 3, 7)
INPUTS_PER_VECTOR = {8: 16, 4: 32}   # inputs in one 16-byte weight vector of the kernel
TILE_ROWS = 16
TILE_INPUTS = {4: 64, 8: 32}   # inputs of a 512-byte tile: 4 (int4) or 2 (int8) mmas of k = 16
# The tile's [row half (g or g+8), input pair (kk or kk+2), first/second input] -> nibble of the word.
_TILE_NIBBLE = {(rh, cp, h): 2 * cp + rh + 4 * h for rh in range(2) for cp in range(2) for h in range(2)}


def cuda_layout_for(bits: int, n: int, k: int, group_size: int) -> str:
    """The CUDA layout a weight_only_linear of this shape is built in."""
    inputs = TILE_INPUTS[bits]
    tiles = n % TILE_ROWS == 0 and k % inputs == 0 and group_size % inputs == 0
    return CUDA_MMA_TILE_LAYOUT if tiles else CUDA_WEIGHT_LAYOUT


def _tile_view(n: int, k: int) -> tuple[int, ...]:
    # int4: row = 16 r + 8 rh + g, input = 64 c + 16 t + 4 j + 2 cp + h
    return (n // TILE_ROWS, 2, 8, k // 64, 4, 4, 2, 2)


def _to_mma_tiles(q: np.ndarray, bits: int) -> np.ndarray:
    n, k = q.shape
    if bits == 8:
        # row = 16 r + 8 rh + g, input = 32 c + 8 t + 4 j + e -> bytes [r, c, g, t, j, rh, e]
        u = (np.asarray(q, np.int8).view(np.uint8) ^ np.uint8(0x80)).reshape(n // TILE_ROWS, 2, 8, k // 32, 4, 2, 4)
        return np.ascontiguousarray(u.transpose(0, 3, 2, 4, 5, 1, 6)).reshape(n, k)
    u = (np.asarray(q, np.int8) + np.int8(8)).view(np.uint8).reshape(_tile_view(n, k))  # a byte per value: lm_head-sized inputs
    words = np.zeros((n // TILE_ROWS, 8, k // 64, 4, 4), np.uint32)   # [r, g, c, t, j]
    for (rh, cp, h), nibble in _TILE_NIBBLE.items():
        words |= u[:, rh, :, :, :, :, cp, h].astype(np.uint32) << np.uint32(4 * nibble)
    words = words.transpose(0, 2, 1, 3, 4)                                      # [r, c, g, t, j]: 512 bytes a tile
    return np.ascontiguousarray(words.astype("<u4")).view(np.uint8).reshape(n, k // 2)


def _from_mma_tiles(w: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        n, k = w.shape
        u = w.reshape(n // TILE_ROWS, k // 32, 8, 4, 2, 2, 4).transpose(0, 5, 2, 1, 3, 4, 6)
        return (np.ascontiguousarray(u).reshape(n, k) ^ np.uint8(0x80)).view(np.int8)
    n, k = w.shape[0], w.shape[1] * 2
    words = w.reshape(-1).view("<u4").reshape(n // TILE_ROWS, k // 64, 8, 4, 4).transpose(0, 2, 1, 3, 4)
    u = np.zeros(_tile_view(n, k), np.uint8)
    for (rh, cp, h), nibble in _TILE_NIBBLE.items():
        u[:, rh, :, :, :, :, cp, h] = (words >> np.uint32(4 * nibble)) & np.uint32(0xF)
    return pack_int4(u.reshape(n, k).view(np.int8) - np.int8(8))


def to_cuda_layout(weight: np.ndarray, bits: int, layout: str = CUDA_WEIGHT_LAYOUT) -> np.ndarray:
    """Row-major int8 [N, K] or packed int4 uint8 [N, K/2] -> `layout`, uint8 of the same shape."""
    if layout == CUDA_MMA_TILE_LAYOUT:
        q = unpack_int4(weight) if bits == 4 else np.asarray(weight, np.int8)
        if bits not in TILE_INPUTS or cuda_layout_for(bits, *q.shape, TILE_INPUTS[bits]) != layout:
            raise ValueError(f"{layout} holds int4 / int8 with N a multiple of 16 and K of 64 / 32; "
                             f"got int{bits} {q.shape}")
        return _to_mma_tiles(q, bits)
    if layout != CUDA_WEIGHT_LAYOUT:
        raise ValueError(f"unknown CUDA weight layout {layout!r}")
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


def from_cuda_layout(weight: np.ndarray, bits: int, layout: str = CUDA_WEIGHT_LAYOUT) -> np.ndarray:
    """The inverse of to_cuda_layout: back to the op set's row-major layout."""
    w = np.ascontiguousarray(weight, np.uint8)
    if layout == CUDA_MMA_TILE_LAYOUT:
        return _from_mma_tiles(w, bits)
    if bits == 8:
        return (w ^ np.uint8(0x80)).view(np.int8)
    n = w.shape[0]
    words = w.reshape(n, -1).view("<u4")
    u = np.stack([(words >> np.uint32(4 * nibble)) & np.uint32(0xF) for nibble in NIBBLE_OF_INPUT], axis=-1)
    q = (u.astype(np.int16) - 8).astype(np.int8).reshape(n, -1)
    return pack_int4(q)


def relayout_weight_only_for_cuda(graph: Graph) -> Graph:
    """Rewrite every row-major `weight_only_linear` weight into its CUDA layout (target cuda only).

    Matches weight_only_linear with weight_layout "row_major"; its `weight` is replaced by the same
    integers in cuda_layout_for's layout and weight_layout names it. The kernels read 16-byte
    vectors of one group, so K and group_size must be multiples of 16 (int8) / 32 (int4) inputs:
    anything else is an error naming the layer, not a slow path.
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
        layout = cuda_layout_for(bits, w.shape[0], k, group)
        g.weights[name] = to_cuda_layout(w, bits, layout)
        node.attrs["weight_layout"] = layout
        done.add(name)
        count += 1
    g.record_pass("relayout_weight_only_for_cuda", count)
    return g


__all__ = ["CUDA_WEIGHT_LAYOUT", "CUDA_MMA_TILE_LAYOUT", "cuda_layout_for", "to_cuda_layout", "from_cuda_layout",
           "relayout_weight_only_for_cuda"]
