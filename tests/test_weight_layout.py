"""The CUDA weight layout of weight_only_linear (passes/weight_layout.py, docs/opset.md): the bit
arrangement the kernel reads, the round trip back to row-major, and the build pass on a tiny graph."""

from __future__ import annotations

import numpy as np
import pytest

from test_passes import IDS
from test_quant_passes import fused, quantized
from graph_reference import run_graph
from trtllm_build.graph.opset import GraphError
from trtllm_build.passes import quantize_linears
from trtllm_build.passes.weight_layout import (CUDA_MMA_TILE_LAYOUT, CUDA_WEIGHT_LAYOUT, cuda_layout_for,
                                               from_cuda_layout, relayout_weight_only_for_cuda, to_cuda_layout)
from trtllm_build.quantization.numerics import pack_int4

RNG = np.random.default_rng(0)


def random_int(bits: int, n: int, k: int) -> np.ndarray:
    lo, hi = (-8, 8) if bits == 4 else (-128, 128)
    return RNG.integers(lo, hi, size=(n, k)).astype(np.int8)


@pytest.mark.parametrize("bits,n,k,layout", [(8, 13, 64, CUDA_WEIGHT_LAYOUT), (4, 13, 64, CUDA_WEIGHT_LAYOUT),
                                             (4, 48, 192, CUDA_MMA_TILE_LAYOUT), (8, 48, 96, CUDA_MMA_TILE_LAYOUT)])
def test_relayout_then_undo_gives_back_the_row_major_weight(bits, n, k, layout):
    q = random_int(bits, n, k)
    row_major = pack_int4(q) if bits == 4 else q
    cuda = to_cuda_layout(row_major, bits, layout)
    assert cuda.dtype == np.uint8 and cuda.shape == row_major.shape
    back = from_cuda_layout(cuda, bits, layout)
    assert back.dtype == row_major.dtype
    np.testing.assert_array_equal(back, row_major)


def test_layout_choice_follows_the_shape():
    assert cuda_layout_for(4, 4096, 4096, 128) == CUDA_MMA_TILE_LAYOUT
    assert cuda_layout_for(4, 4096, 14336, 64) == CUDA_MMA_TILE_LAYOUT
    assert cuda_layout_for(4, 4096, 4096, 32) == CUDA_WEIGHT_LAYOUT    # a group inside a tile's 64 inputs
    assert cuda_layout_for(4, 4104, 4096, 128) == CUDA_WEIGHT_LAYOUT   # N not a multiple of 16
    assert cuda_layout_for(4, 64, 96, 96) == CUDA_WEIGHT_LAYOUT
    assert cuda_layout_for(8, 4096, 4096, 4096) == CUDA_MMA_TILE_LAYOUT  # int8 tiles: 32 inputs
    assert cuda_layout_for(8, 4096, 14336, 14336) == CUDA_MMA_TILE_LAYOUT
    assert cuda_layout_for(8, 64, 96, 96) == CUDA_MMA_TILE_LAYOUT
    assert cuda_layout_for(8, 64, 80, 80) == CUDA_WEIGHT_LAYOUT       # K not a multiple of 32
    assert cuda_layout_for(8, 64, 96, 16) == CUDA_WEIGHT_LAYOUT       # a group inside a tile's 32 inputs
    with pytest.raises(ValueError, match="multiple of 16"):
        to_cuda_layout(pack_int4(random_int(4, 24, 64)), 4, CUDA_MMA_TILE_LAYOUT)
    with pytest.raises(ValueError, match="multiple of 16"):
        to_cuda_layout(random_int(8, 16, 48), 8, CUDA_MMA_TILE_LAYOUT)


def test_mma_tile_bytes_are_where_the_header_says():
    # weight_only_cuda.h: tile (r, c) at (r * K/64 + c) * 512, lane 4g + t at + 16 (4g + t), word j at
    # + 4j; pair p of the word in nibbles p and p + 4: rows g, g+8, g, g+8 and inputs kk, kk, kk+2, kk+2
    # (kk = 64c + 16t + 4j), the second input of the pair one further.
    n, k = 32, 128
    q = random_int(4, n, k)
    raw = to_cuda_layout(pack_int4(q), 4, CUDA_MMA_TILE_LAYOUT).reshape(-1)
    for r in range(n // 16):
        for c in range(k // 64):
            for g in range(8):
                for t in range(4):
                    for j in range(4):
                        at = (r * (k // 64) + c) * 512 + 16 * (4 * g + t) + 4 * j
                        word = int.from_bytes(raw[at:at + 4].tobytes(), "little")
                        kk = 64 * c + 16 * t + 4 * j
                        for p, (row, col) in enumerate([(g, kk), (g + 8, kk), (g, kk + 2), (g + 8, kk + 2)]):
                            assert (word >> (4 * p)) & 0xF == q[16 * r + row, col] + 8
                            assert (word >> (16 + 4 * p)) & 0xF == q[16 * r + row, col + 1] + 8


def test_int8_mma_tile_bytes_are_where_the_header_says():
    # weight_only_cuda.h: tile (r, c) at (r * K/32 + c) * 512, lane 4g + t at + 16 (4g + t); words 2j
    # and 2j + 1 rows g and g + 8, inputs kk .. kk+3 in bytes 0..3 (kk = 32c + 8t + 4j), offset binary.
    n, k = 32, 96
    q = random_int(8, n, k)
    raw = to_cuda_layout(q, 8, CUDA_MMA_TILE_LAYOUT).reshape(-1)
    for r in range(n // 16):
        for c in range(k // 32):
            for g in range(8):
                for t in range(4):
                    for j in range(2):
                        kk = 32 * c + 8 * t + 4 * j
                        for rh in range(2):
                            at = (r * (k // 32) + c) * 512 + 16 * (4 * g + t) + 4 * (2 * j + rh)
                            for e in range(4):
                                assert raw[at + e] == int(q[16 * r + g + 8 * rh, kk + e]) + 128


def _mma_m16n8k16(a_frag: np.ndarray, b_frag: np.ndarray) -> np.ndarray:
    """D [16, 8] from per-lane fragments as the PTX ISA defines mma.m16n8k16 (.row.col, 16-bit A/B):
    lane 4g + t holds A[g, 2t..2t+1], A[g+8, 2t..], A[g, 2t+8..], A[g+8, 2t+8..] and B[2t..2t+1, g],
    B[2t+8..2t+9, g]."""
    a, b = np.zeros((16, 16)), np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for reg, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            a[row, col:col + 2] = a_frag[lane, 2 * reg:2 * reg + 2]
        for reg, kk in enumerate([2 * t, 2 * t + 8]):
            b[kk:kk + 2, g] = b_frag[lane, 2 * reg:2 * reg + 2]
    return a @ b


def _lane_a_registers(bits: int, tile: np.ndarray, lane: int, j: int) -> list[int]:
    """The 8 values (A registers 0..3, two each) that mma j of `lane` takes from a 512-byte tile, as
    the tile GEMV reads them: int4 word j, pair p in nibbles p and p + 4; int8 words 2j (row g) and
    2j + 1 (row g + 8), registers {g: kk, kk+1}, {g+8: kk, kk+1}, {g: kk+2, kk+3}, {g+8: kk+2, kk+3}."""
    mine = tile[16 * lane:16 * lane + 16]
    if bits == 4:
        word = int.from_bytes(mine[4 * j:4 * j + 4].tobytes(), "little")
        return [((word >> (4 * p + 16 * h)) & 0xF) - 8 for p in range(4) for h in range(2)]
    g, h = mine[8 * j:8 * j + 4].astype(int) - 128, mine[8 * j + 4:8 * j + 8].astype(int) - 128
    return [g[0], g[1], h[0], h[1], g[2], g[3], h[2], h[3]]


@pytest.mark.parametrize("bits,k", [(4, 128), (8, 96)])
def test_mma_tiles_feed_the_tensor_core_the_product_of_w_and_x(bits, k):
    # What the tile GEMV does, with the mma emulated from its PTX definition: a lane's A registers
    # for mma j as above, its B registers x[kk .. kk+3] of x row g, kk = TI c + TI/4 t + 4j (TI = 64
    # inputs a tile for int4, 32 for int8). Summed over the tiles, D must be q @ x for every row of x.
    n, m, ti = 32, 8, 64 if bits == 4 else 32
    q = random_int(bits, n, k)
    x = RNG.standard_normal((m, k))
    raw = to_cuda_layout(pack_int4(q) if bits == 4 else q, bits, CUDA_MMA_TILE_LAYOUT).reshape(-1)
    y = np.zeros((m, n))
    for r in range(n // 16):
        for c in range(k // ti):
            tile = raw[(r * (k // ti) + c) * 512:(r * (k // ti) + c + 1) * 512]
            for j in range(ti // 16):
                a_frag = np.array([_lane_a_registers(bits, tile, lane, j) for lane in range(32)], np.float64)
                kk = [ti * c + ti // 4 * (lane % 4) + 4 * j for lane in range(32)]
                b_frag = np.array([x[lane // 4, kk[lane]:kk[lane] + 4] for lane in range(32)])
                y[:, 16 * r:16 * r + 16] += _mma_m16n8k16(a_frag, b_frag).T
    np.testing.assert_allclose(y, x @ q.T.astype(np.float64), rtol=1e-12, atol=1e-12)


def test_int8_layout_is_offset_binary():
    q = np.array([[-128, -1, 0, 1, 127] + [0] * 11], np.int8)
    np.testing.assert_array_equal(to_cuda_layout(q, 8)[0, :5], [0, 127, 128, 129, 255])


def test_int4_word_puts_inputs_2j_and_2j_plus_1_in_the_two_halves_of_a_shift_by_4j():
    # What the kernel does with each 32-bit word: (word >> 4j) & 0x000f000f = (u[2j], u[2j + 1]).
    q = random_int(4, 3, 32)
    words = to_cuda_layout(pack_int4(q), 4).view("<u4")
    u = q.astype(np.int32) + 8
    for w in range(4):
        for j in range(4):
            halves = (words[:, w].astype(np.int64) >> (4 * j)) & 0x000F000F
            np.testing.assert_array_equal(halves & 0xFFFF, u[:, 8 * w + 2 * j])
            np.testing.assert_array_equal(halves >> 16, u[:, 8 * w + 2 * j + 1])


@pytest.mark.parametrize("algo", ["W8A16", "W4A16"])
def test_pass_relayouts_every_weight_only_linear_and_keeps_the_integers(algo):
    graph = quantize_linears(fused(quantized(algo)))
    out = relayout_weight_only_for_cuda(graph)
    nodes = [n for n in out.nodes if n.op == "weight_only_linear"]
    bits = nodes[0].attrs["weight_bits"]
    layouts = [cuda_layout_for(bits, graph.weights[n.weights["weight"]].shape[0],
                               graph.weights[n.weights["weight"]].shape[1] * (8 // bits), n.attrs["group_size"])
               for n in nodes]
    assert nodes and [n.attrs["weight_layout"] for n in nodes] == layouts
    # the tiny model's int4 layers take both layouts (qkv 128x64 tiles, down 64x96 interleaved); int8
    # tiles hold 32 inputs, so all of its layers take them
    assert set(layouts) == ({CUDA_WEIGHT_LAYOUT, CUDA_MMA_TILE_LAYOUT} if bits == 4 else {CUDA_MMA_TILE_LAYOUT})
    assert out.meta["passes"]["relayout_weight_only_for_cuda"] == len(nodes)
    for n in nodes:
        name = n.weights["weight"]
        np.testing.assert_array_equal(from_cuda_layout(out.weights[name], bits, n.attrs["weight_layout"]),
                                      graph.weights[name])
    # the input graph is untouched (passes are pure)
    assert all(n.attrs["weight_layout"] == "row_major" for n in graph.nodes if n.op == "weight_only_linear")
    # and undoing the layout gives an engine graph that computes the same logits
    undone = out.copy()
    for n in undone.nodes:
        if n.op == "weight_only_linear":
            undone.weights[n.weights["weight"]] = from_cuda_layout(undone.weights[n.weights["weight"]], bits,
                                                                   n.attrs["weight_layout"])
            n.attrs["weight_layout"] = "row_major"
    np.testing.assert_array_equal(run_graph(undone, IDS)["logits"], run_graph(graph, IDS)["logits"])


def test_pass_rejects_groups_the_kernel_cannot_read():
    graph = quantize_linears(fused(quantized("W4A16_AWQ")))  # group 16 < 32 inputs per 16-byte vector
    with pytest.raises(GraphError, match="multiples of 32"):
        relayout_weight_only_for_cuda(graph)


def test_weight_only_tactic_keys_name_each_layer_shape():
    # The CUDA backend refuses an engine whose tactics lack a key it looks up (check_tuned), so the
    # GPU engine tests hold these keys to the C++ spelling.
    from trtllm_build.passes import optimize
    from trtllm_build.tactics import weight_only_shapes

    graph = relayout_weight_only_for_cuda(optimize(quantized("W4A16"), max_num_tokens=16, max_output_rows=4))
    ops = [node.to_json() for node in graph.nodes]
    shapes = weight_only_shapes(ops, graph.meta["memory_plan"], {k: w.shape for k, w in graph.weights.items()})
    # qkv 128x64, o 64x64, gate_up 192x64, down 64x96; per channel (G = K), float32 tiny model
    tiles, rows = CUDA_MMA_TILE_LAYOUT, CUDA_WEIGHT_LAYOUT
    assert shapes == {"128x64:int4:g64:float32:nopre:nobias": (128, 64, 4, 64, "float32", False, False, "float32", tiles),
                      "64x64:int4:g64:float32:nopre:nobias": (64, 64, 4, 64, "float32", False, False, "float32", tiles),
                      "192x64:int4:g64:float32:nopre:nobias": (192, 64, 4, 64, "float32", False, False, "float32", tiles),
                      "64x96:int4:g96:float32:nopre:nobias": (64, 96, 4, 96, "float32", False, False, "float32", rows)}


def _bits_as(bits: np.ndarray, dtype) -> np.ndarray:
    """16-bit patterns -> float64 values of a 16-bit float dtype (bfloat16 via float32's upper half)."""
    bits = np.asarray(bits, np.uint32)
    if dtype == "bfloat16":
        return (bits << np.uint32(16)).view(np.float32).astype(np.float64)
    return bits.astype(np.uint16).view(np.float16).astype(np.float64)


@pytest.mark.parametrize("dtype,magic,offset", [("bfloat16", 0x4300, 136.0), ("float16", 0x6400, 1032.0)])
def test_int4_magic_numbers_of_the_kernel_give_back_q(dtype, magic, offset):
    # weight_only_cuda.cu dequant_int4: ((word >> 4j) & 0x000f000f) | magic in both halves, minus offset.
    q = random_int(4, 5, 64)
    words = to_cuda_layout(pack_int4(q), 4).view("<u4").astype(np.uint32)
    for j in range(4):
        pair = ((words >> np.uint32(4 * j)) & np.uint32(0x000F000F)) | np.uint32(magic | magic << 16)
        np.testing.assert_array_equal(_bits_as(pair & np.uint32(0xFFFF), dtype) - offset, q[:, 2 * j::8])
        np.testing.assert_array_equal(_bits_as(pair >> np.uint32(16), dtype) - offset, q[:, 2 * j + 1::8])


def test_int8_magic_numbers_of_the_kernel_give_back_q():
    # dequant_int8: float16 0x6400 | u minus 1152; bfloat16 via float32 0x4b000000 | u minus 2^23 + 128.
    q = random_int(8, 3, 32)
    u = to_cuda_layout(q, 8).astype(np.uint32)
    np.testing.assert_array_equal(_bits_as(np.uint32(0x6400) | u, "float16") - 1152.0, q)
    f = (np.uint32(0x4B000000) | u).view(np.float32) - np.float32(8388736.0)
    np.testing.assert_array_equal(f, q)
    # and the float32 q keeps its value in its upper 16 bits (what the byte permute 0x7632 keeps)
    np.testing.assert_array_equal(_bits_as(f.view(np.uint32) >> np.uint32(16), "bfloat16"), q)
