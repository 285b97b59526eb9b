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
from trtllm_build.passes.weight_layout import (CUDA_WEIGHT_LAYOUT, from_cuda_layout, relayout_weight_only_for_cuda,
                                               to_cuda_layout)
from trtllm_build.quantization.numerics import pack_int4

RNG = np.random.default_rng(0)


def random_int(bits: int, n: int, k: int) -> np.ndarray:
    lo, hi = (-8, 8) if bits == 4 else (-128, 128)
    return RNG.integers(lo, hi, size=(n, k)).astype(np.int8)


@pytest.mark.parametrize("bits", [8, 4])
def test_relayout_then_undo_gives_back_the_row_major_weight(bits):
    q = random_int(bits, 13, 64)
    row_major = pack_int4(q) if bits == 4 else q
    cuda = to_cuda_layout(row_major, bits)
    assert cuda.dtype == np.uint8 and cuda.shape == row_major.shape
    back = from_cuda_layout(cuda, bits)
    assert back.dtype == row_major.dtype
    np.testing.assert_array_equal(back, row_major)


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
    assert nodes and all(n.attrs["weight_layout"] == CUDA_WEIGHT_LAYOUT for n in nodes)
    assert out.meta["passes"]["relayout_weight_only_for_cuda"] == len(nodes)
    bits = nodes[0].attrs["weight_bits"]
    for n in nodes:
        name = n.weights["weight"]
        np.testing.assert_array_equal(from_cuda_layout(out.weights[name], bits), graph.weights[name])
    # the input graph is untouched (passes are pure)
    assert all(n.attrs["weight_layout"] == "row_major" for n in graph.nodes if n.op == "weight_only_linear")
    # and undoing the layout gives an engine graph that computes the same logits
    undone = out.copy()
    for n in undone.nodes:
        if n.op == "weight_only_linear":
            undone.weights[n.weights["weight"]] = from_cuda_layout(undone.weights[n.weights["weight"]], bits)
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
    assert shapes == {"128x64:int4:g64:float32:nopre:nobias": (128, 64, 4, 64, "float32", False, False, "float32"),
                      "64x64:int4:g64:float32:nopre:nobias": (64, 64, 4, 64, "float32", False, False, "float32"),
                      "192x64:int4:g64:float32:nopre:nobias": (192, 64, 4, 64, "float32", False, False, "float32"),
                      "64x96:int4:g96:float32:nopre:nobias": (64, 96, 4, 96, "float32", False, False, "float32")}


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
