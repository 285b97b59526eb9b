"""CUDA weight-only GEMM (W8A16 / W4A16, AWQ) and FP8 KV cache attention against the CPU kernels.

weight_only_linear: both sides multiply the same dequantized weights (round(q * scale) in the
activation dtype, bit-identical by the op set's contract) by the same x' = round(x * pre_quant_scale)
and sum in float32, in different orders: |gpu - cpu| <= 2 eps |cpu| + 1e-5 sum_k |x' w|; with a bias,
cuBLASLt (the dequant + GEMM path) may round x'.w before adding it: 2 eps (|x'.w| + |bias|) more there.

FP8 KV cache: without rope and norms the cached codes are bit-identical (cvt.rn.satfinite of the
same float32 products); with rope the float32 k may differ in its last bit between the backends'
angle computations, so a code may move to its neighbour, rarely. Outputs as the other attention
tests (4e-3 of the output scale).
"""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

from test_cuda_kernels import RTOL, TC_ATOL, C, K, assert_close, attention_case, rand, values
from trtllm_runtime import _core
from trtllm_build.passes.weight_layout import CUDA_MMA_TILE_LAYOUT, to_cuda_layout
from trtllm_build.quantization import numerics

pytestmark = pytest.mark.gpu

NP_DTYPE = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # the same inputs in every run


def weight_only_case(rng, dtype, bits, group, n, k, pre, bias):
    np_dtype = np.dtype(NP_DTYPE[dtype])
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.2
    q, scale = numerics.quantize_groupwise(w, bits, group, np_dtype)
    packed = numerics.pack_int4(q) if bits == 4 else q
    kw = dict(dtype=dtype, weight_bits=bits, group_size=group,
              pre_quant_scale=rng.uniform(0.5, 2.0, k).astype(np_dtype).view(np.uint16) if pre else None,
              bias=rand(rng, (n,), dtype) if bias else None)
    return packed, scale.view(np.uint16), kw


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("bits,group", [(8, 64), (8, 128), (8, 0), (4, 64), (4, 128), (4, 0)])  # 0: G = K
@pytest.mark.parametrize("m", [1, 2, 3, 8, 13, 33, 128])
@pytest.mark.parametrize("pre,bias", [(False, False), (True, True), (True, False)])
def test_weight_only_linear_matches_cpu(rng, dtype, bits, group, m, pre, bias):
    n, k = 203, 384  # n odd: a warp's second row falls off the end
    group = group or k
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, pre, bias)
    x = rand(rng, (m, k), dtype)
    cpu = K.weight_only_linear(x, packed, scale, **kw)
    deq = numerics.dequantize_weight_only(packed, scale.view(NP_DTYPE[dtype]), bits)
    magnitude = np.abs(values(x, dtype)) @ np.abs(deq.T) * 2.0  # pre_quant_scale <= 2
    # cuBLASLt's bias epilogue may round x'.w to the activation dtype before adding the bias (as in
    # test_gemv_tactic_matches_cpu): on that path 2 ulps of |x'.w| + |bias| more.
    rounded_first = RTOL[dtype] * (magnitude + np.abs(values(kw["bias"], dtype))) if bias else 0.0
    for path in ("gemv", "dequant_gemm") if m <= 16 else ("dequant_gemm",):  # both paths where both run
        gpu = C.weight_only_linear(x, to_cuda_layout(packed, bits), scale, **kw, path=path)
        atol = 1e-5 * magnitude.max() + (rounded_first if path == "dequant_gemm" else 0.0)
        try:
            assert_close(gpu, cpu, dtype, atol=atol)
        except AssertionError as e:
            raise AssertionError(f"path {path}: {e}") from None


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("bits,n,k,group", [(4, 48, 384, 64), (4, 48, 384, 128), (4, 208, 1088, 0),  # 0: G = K
                                            (8, 48, 416, 32), (8, 48, 384, 128), (8, 208, 1088, 0)])
@pytest.mark.parametrize("m", [1, 2, 3, 8, 9, 16, 33, 128, 130])
@pytest.mark.parametrize("pre,bias", [(False, False), (True, True), (True, False)])
def test_mma_tile_layout_matches_cpu(rng, dtype, bits, n, k, group, m, pre, bias):
    # The tensor-core GEMV (m <= 8: one column group of the mma, m <= 16: two; past 16, chunks of 16
    # rows along the grid, the last one partial at m = 33; up to 128 rows, so m = 130 runs the
    # dequantize + cuBLASLt path whichever is asked) and that path. int4 tiles hold 64 inputs: k =
    # 384 is 6 tiles for 8 or 16 warps (most warps get one or none), k = 1088 is 17 (runs of 3, the
    # last warp's shorter); int8 tiles 32: k = 416 is 13 tiles with a group each, 384 is 12, 1088 is
    # 34. n = 208 is 13 tile rows.
    group = group or k
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, pre, bias)
    x = rand(rng, (m, k), dtype)
    cpu = K.weight_only_linear(x, packed, scale, **kw)
    deq = numerics.dequantize_weight_only(packed, scale.view(NP_DTYPE[dtype]), bits)
    magnitude = np.abs(values(x, dtype)) @ np.abs(deq.T) * 2.0
    rounded_first = RTOL[dtype] * (magnitude + np.abs(values(kw["bias"], dtype))) if bias else 0.0
    weight = to_cuda_layout(packed, bits, CUDA_MMA_TILE_LAYOUT)
    for path in ("gemv", "dequant_gemm"):
        gpu = C.weight_only_linear(x, weight, scale, **kw, path=path, weight_layout=CUDA_MMA_TILE_LAYOUT)
        cublaslt = path == "dequant_gemm" or m > 128
        atol = 1e-5 * magnitude.max() + (rounded_first if cublaslt else 0.0)
        try:
            assert_close(gpu, cpu, dtype, atol=atol)
        except AssertionError as e:
            raise AssertionError(f"path {path}: {e}") from None


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n", [9600, 35200])
@pytest.mark.parametrize("m", [1, 5, 12, 40])
@pytest.mark.parametrize("pre", [False, True])
def test_mma_tile_layout_on_large_grids_matches_cpu(rng, bits, n, m, pre):
    # Grids of 600 and 2200 blocks (more than the GPU holds at once, as the 8B gate_up's 1792 and
    # lm_head's 8016); m = 12 takes two column groups of x. k = 192: 3 (int4) or 6 (int8) tiles for
    # 8 or 16 warps.
    dtype, k, group = "bfloat16", 192, 64
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, pre, True)
    x = rand(rng, (m, k), dtype)
    cpu = K.weight_only_linear(x, packed, scale, **kw)
    deq = numerics.dequantize_weight_only(packed, scale.view(NP_DTYPE[dtype]), bits)
    magnitude = np.abs(values(x, dtype)) @ np.abs(deq.T) * 2.0
    gpu = C.weight_only_linear(x, to_cuda_layout(packed, bits, CUDA_MMA_TILE_LAYOUT), scale, **kw, path="gemv",
                               weight_layout=CUDA_MMA_TILE_LAYOUT)
    assert_close(gpu, cpu, dtype, atol=1e-5 * magnitude.max())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [14336, 14016])
@pytest.mark.parametrize("m", [1, 3, 12, 40])
@pytest.mark.parametrize("pre", [False, True])
@pytest.mark.parametrize("n", [48, 9600])
def test_mma_tile_layout_on_long_rows_matches_cpu(rng, bits, k, m, pre, n):
    # int4: rows of 224 tiles (the 8B down_proj: runs of 28 tiles for 8 warps, 14 for 16) and of 219
    # (the last warp's run shorter, and not a multiple of the tiles a warp loads at once); int8: 448
    # and 438 tiles. m = 40 in chunks. The dequantize kernel takes 8 tiles a block: for int4 28
    # blocks, or 27 and one of 3 tiles. At m <= 8, int4 without a pre_quant_scale runs 16 warps on
    # n = 48's 3 blocks and 8 on n = 9600's 600 (more than two blocks an SM).
    dtype, group = "bfloat16", 128 if k % 128 == 0 else 64
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, pre, False)
    x = rand(rng, (m, k), dtype)
    cpu = K.weight_only_linear(x, packed, scale, **kw)
    deq = numerics.dequantize_weight_only(packed, scale.view(NP_DTYPE[dtype]), bits)
    magnitude = np.abs(values(x, dtype)) @ np.abs(deq.T) * 2.0
    for path in ("gemv", "dequant_gemm"):
        gpu = C.weight_only_linear(x, to_cuda_layout(packed, bits, CUDA_MMA_TILE_LAYOUT), scale, **kw, path=path,
                                   weight_layout=CUDA_MMA_TILE_LAYOUT)
        try:
            assert_close(gpu, cpu, dtype, atol=1e-5 * magnitude.max())
        except AssertionError as e:
            raise AssertionError(f"path {path}: {e}") from None


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_mma_tile_layout_float32_output_against_float64(rng, bits, m):
    # The quantized lm_head's float32 logits from the tile GEMV: unrounded float32 sums of the contract.
    dtype, n, k, group = "bfloat16", 64, 256, 128
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, True, False)
    x = rand(rng, (m, k), dtype)
    pre = values(kw["pre_quant_scale"], dtype).astype(np.float32)
    xs = (values(x, dtype).astype(np.float32) * pre).astype(ml_dtypes.bfloat16).astype(np.float64)
    deq = numerics.dequantize_weight_only(packed, scale.view(ml_dtypes.bfloat16), bits).astype(np.float64)
    weight = to_cuda_layout(packed, bits, CUDA_MMA_TILE_LAYOUT)
    gpu = C.weight_only_linear(x, weight, scale, **kw, path="gemv", out_dtype="float32", weight_layout=CUDA_MMA_TILE_LAYOUT)
    assert np.abs(gpu - xs @ deq.T).max() <= 1e-5 * (np.abs(xs) @ np.abs(deq.T)).max()


def test_mma_tile_layout_rejects_shapes_it_cannot_hold(rng):
    for bits, group in ((8, 16), (4, 32)):  # a group inside a tile
        packed, scale, kw = weight_only_case(rng, "bfloat16", bits, group, 48, 384, False, False)
        with pytest.raises(ValueError, match=r"k, group_size multiples of 64 \(32\); got int" + str(bits)):
            C.weight_only_linear(rand(rng, (1, 384), "bfloat16"), to_cuda_layout(packed, bits, CUDA_MMA_TILE_LAYOUT),
                                 scale, **kw, weight_layout=CUDA_MMA_TILE_LAYOUT)
    with pytest.raises(ValueError, match="weight_layout 'row_major' is not runnable on the CUDA backend"):
        C.weight_only_linear(rand(rng, (1, 384), "bfloat16"), packed, scale, **kw, weight_layout="row_major")


@pytest.mark.parametrize("bits,k,group", [(8, 1040, 16), (8, 1040, 0), (4, 2080, 32), (4, 2080, 160)])
@pytest.mark.parametrize("m", [1, 5, 8])
def test_weight_only_gemv_where_rows_end_inside_a_sweep(rng, bits, k, group, m):
    # 1040-byte rows (int8 k = 1040, int4 k = 2080) are 65 16-byte vectors: a warp's lanes sweep a
    # row in 512-byte strides, the last sweep with one vector; groups of one vector (16 int8 / 32 int4
    # inputs), five (160 int4) or the whole row. n = 40: the last block has rows past the end.
    n, dtype = 40, "bfloat16"
    group = group or k
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, True, True)
    x = rand(rng, (m, k), dtype)
    cpu = K.weight_only_linear(x, packed, scale, **kw)
    gpu = C.weight_only_linear(x, to_cuda_layout(packed, bits), scale, **kw, path="gemv")
    deq = numerics.dequantize_weight_only(packed, scale.view(NP_DTYPE[dtype]), bits)
    assert_close(gpu, cpu, dtype, atol=1e-5 * (np.abs(values(x, dtype)) @ np.abs(deq.T) * 2.0).max())


@pytest.mark.parametrize("bits,group", [(8, 0), (4, 128)])
@pytest.mark.parametrize("m", [1, 3, 16, 40])
def test_weight_only_linear_float32_output(rng, bits, group, m):
    # A quantized lm_head writes float32 logits: the same float32 sums, stored unrounded.
    dtype, n, k = "bfloat16", 203, 384
    packed, scale, kw = weight_only_case(rng, dtype, bits, group or k, n, k, True, False)
    x = rand(rng, (m, k), dtype)
    pre = values(kw["pre_quant_scale"], dtype).astype(np.float32)
    xs = (values(x, dtype).astype(np.float32) * pre).astype(ml_dtypes.bfloat16).astype(np.float64)
    deq = numerics.dequantize_weight_only(packed, scale.view(ml_dtypes.bfloat16), bits).astype(np.float64)
    ref = xs @ deq.T
    bound = 1e-5 * (np.abs(xs) @ np.abs(deq.T)).max()  # float32 sums in some order; no rounding to bf16
    weight = to_cuda_layout(packed, bits)
    for path in ("gemv", "dequant_gemm") if m <= 16 else ("dequant_gemm",):
        gpu = C.weight_only_linear(x, weight, scale, **kw, path=path, out_dtype="float32")
        assert gpu.dtype == np.float32 and gpu.shape == (m, n)
        assert np.abs(gpu - ref).max() <= bound, path
        if path == "gemv":  # the bf16-output GEMV rounds the same sums once
            narrow = C.weight_only_linear(x, weight, scale, **kw, path=path)
            np.testing.assert_array_equal(narrow, gpu.astype(ml_dtypes.bfloat16).view(np.uint16))
    with pytest.raises(ValueError, match="or float32 without a bias"):
        C.weight_only_linear(x, weight, scale, **{**kw, "bias": rand(rng, (n,), dtype)}, out_dtype="float32")


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_linear_against_float64_reference(rng, bits):
    # An independent check of the contract (not via the CPU kernel): x' = round(x * s), w = round(q * scale).
    dtype, n, k, group, m = "bfloat16", 64, 256, 128, 4
    packed, scale, kw = weight_only_case(rng, dtype, bits, group, n, k, True, False)
    x = rand(rng, (m, k), dtype)
    gpu = values(C.weight_only_linear(x, to_cuda_layout(packed, bits), scale, **kw), dtype)
    pre = values(kw["pre_quant_scale"], dtype).astype(np.float32)
    xs = (values(x, dtype).astype(np.float32) * pre).astype(ml_dtypes.bfloat16).astype(np.float64)
    ref = xs @ numerics.dequantize_weight_only(packed, scale.view(ml_dtypes.bfloat16), bits).astype(np.float64).T
    bound = 2 * float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps) * np.abs(ref) + 1e-5 * np.abs(ref).max()
    assert np.all(np.abs(gpu - ref) <= bound)


@pytest.mark.parametrize("bits,layout", [(4, "cuda_k_interleaved_v1"), (4, CUDA_MMA_TILE_LAYOUT),
                                         (8, "cuda_k_interleaved_v1"), (8, CUDA_MMA_TILE_LAYOUT)])
def test_weight_only_autotune_times_both_paths_and_picks_the_faster(bits, layout):
    tuned = _core.cuda_autotune_weight_only(512, 1024, "bfloat16", bits, 128, True, False, [1, 16, 64, 256], 5,
                                            weight_layout=layout)
    assert [t["m"] for t in tuned] == [1, 16, 64, 256]
    gemv_rows = 128 if layout == CUDA_MMA_TILE_LAYOUT else 16  # the tile GEMV takes x in chunks of 16 rows
    for t in tuned:
        assert t["dequant_us"] > 0 and (t["gemv_us"] > 0) == (t["m"] <= gemv_rows)
        faster = "gemv" if 0 < t["gemv_us"] < t["dequant_us"] else "dequant_gemm"
        assert t["path"] == faster


def test_weight_only_linear_rejects_groups_the_kernel_cannot_read(rng):
    packed, scale, kw = weight_only_case(rng, "bfloat16", 4, 16, 8, 64, False, False)
    with pytest.raises(ValueError, match="multiples of 32"):
        C.weight_only_linear(rand(rng, (1, 64), "bfloat16"), to_cuda_layout(packed, 4), scale, **kw)


def fp8_cache(rng, shape) -> np.ndarray:
    """Random float8_e4m3fn codes (uint8), no NaN codes."""
    codes = rng.integers(0, 256, size=shape).astype(np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0
    return codes


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("rope", [False, True])
def test_attention_with_fp8_kv_cache_matches_cpu(rng, dtype, rope):
    # decode (new 1), prefill (past 0), chunked prefill (past > 0, new > 1)
    qkv, kv, past, new, table, kwargs = attention_case(rng, dtype, h=8, h_kv=2, d=64, past=[37, 0, 20, 5, 300],
                                                       new=[1, 70, 9, 1, 1], rope=rope)
    kv_scale = 4.0 / 448  # random codes reach 4, as the new keys do
    cache = fp8_cache(rng, kv.shape)
    kv_cpu, kv_gpu = cache.copy(), cache.copy()
    cpu = K.attention(qkv, kv_cpu, past, new, table, **kwargs, kv_scale=kv_scale)
    gpu = C.attention(qkv, kv_gpu, past, new, table, **kwargs, kv_scale=kv_scale)
    if rope:
        differ = kv_gpu != kv_cpu
        assert differ.mean() < 1e-2, "more than 1% of the cached FP8 codes differ"
        assert np.all(np.abs(kv_gpu[differ].astype(np.int16) - kv_cpu[differ]) == 1), "a code moved past its neighbour"
    else:
        np.testing.assert_array_equal(kv_gpu, kv_cpu)
    assert not np.array_equal(kv_gpu, cache), "the new keys were not written"
    scale = np.abs(values(cpu, dtype)).max()
    assert_close(gpu, cpu, dtype, atol=4e-3 * scale)


def test_attention_fp8_kv_decode_splits_match_cpu(rng):
    dtype = "bfloat16"
    for num_splits in (1, 7):
        qkv, kv, past, new, table, kwargs = attention_case(rng, dtype, h=16, h_kv=2, d=128, past=[600, 3, 255],
                                                           new=[1, 1, 1], tokens_per_block=32, rope=False)
        cache = fp8_cache(rng, kv.shape)
        kv_cpu, kv_gpu = cache.copy(), cache.copy()
        cpu = K.attention(qkv, kv_cpu, past, new, table, **kwargs, kv_scale=0.01)
        gpu = C.attention(qkv, kv_gpu, past, new, table, **kwargs, kv_scale=0.01, num_splits=num_splits)
        np.testing.assert_array_equal(kv_gpu, kv_cpu)
        assert_close(gpu, cpu, dtype, atol=4e-3 * np.abs(values(cpu, dtype)).max())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("h, h_kv, tokens_per_block", [(8, 2, 32), (8, 1, 128)])
def test_tensor_core_prefill_reads_an_fp8_kv_cache_as_the_cpu_does(rng, dtype, d, h, h_kv, tokens_per_block):
    # The tensor-core prefill over an FP8 cache: the codes widened to the activation dtype in shared
    # memory, the cache's scale applied to the scores and the output. Fresh prefills, chunked
    # continuations over cached codes, lengths off the 64-key tiles, a decode row; the tensor-core
    # rounding model of TC_ATOL (q and P rounded to the activation dtype).
    qkv, kv, past, new, table, kwargs = attention_case(rng, dtype, h=h, h_kv=h_kv, d=d, past=[0, 37, 0, 300, 5],
                                                       new=[17, 100, 257, 130, 1], tokens_per_block=tokens_per_block,
                                                       rope=False)
    kv_scale = 4.0 / 448  # random codes reach 4, as the new keys do
    cache = fp8_cache(rng, kv.shape)
    kv_cpu, kv_gpu = cache.copy(), cache.copy()
    cpu = K.attention(qkv, kv_cpu, past, new, table, **kwargs, kv_scale=kv_scale)
    gpu = C.attention(qkv, kv_gpu, past, new, table, **kwargs, kv_scale=kv_scale)
    np.testing.assert_array_equal(kv_gpu, kv_cpu)
    assert_close(gpu, cpu, dtype, atol=TC_ATOL[dtype] * np.abs(values(cpu, dtype)).max())
    # Token 0 sees one key: its output is that key's value, fl(code * scale) rounded once, bit for
    # bit (a scale applied in the wrong place, or twice, moves it)
    np.testing.assert_array_equal(values(gpu, dtype)[0], values(cpu, dtype)[0])
