"""CUDA quantized kernels (op set v2) against the CPU emulation kernels, on random inputs.

What must agree, and why:
- `quantize`: bit for bit (one float32 multiply by the same host-computed 1/scale, the same
  conversion: cvt.rn.satfinite to e4m3, round-half-even saturating int8, NaN -> 0).
- fused quantized outputs of norms and activations: bit for bit against `quantize` of the same
  kernel's float32 output (the fusion changes nothing but the store), and bit for bit against the
  CPU where the float32 math is exact in any order (inputs k/8: sums of squares are exact); on
  general inputs the float32 results differ in the last bits (summation order, expf), so a code may
  move to its neighbour where the value sits on a rounding boundary: at most 0.2% of elements, and
  never by more than one code.
- `int8_linear`: bit for bit (exact int32 accumulators on both sides, the same epilogue:
  fl(float(acc) * alpha[n]) + bias, rounded once), cuBLASLt and the GEMV alike.
- `fp8_linear`: products are exact; only the float32 summation order differs. The bound is
  2 ulp of the output dtype plus 2^-13 * alpha * sum |x w|: Hopper's FP8 tensor cores keep about
  14 bits inside a k-block before cuBLASLt promotes to float32 (DeepSeek-V3 report, sec. 3.3.2).
"""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

from trtllm_runtime import _core

pytestmark = pytest.mark.gpu

K = _core.kernels
C = getattr(_core, "cuda_kernels", None)
NP_DTYPE = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
OUT_EPS = {"float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}
QDTYPES = ["float8_e4m3fn", "int8"]


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # the same inputs in every run


def to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """float values -> the kernels' representation of dtype (16-bit types as uint16 bits)."""
    x = np.asarray(x, np.float32)
    return x if dtype == "float32" else x.astype(NP_DTYPE[dtype]).view(np.uint16)


def values(a: np.ndarray, dtype: str) -> np.ndarray:
    return (a if dtype == "float32" else a.view(NP_DTYPE[dtype])).astype(np.float64)


def out_scale(rng, cols: int, per_channel: bool, amax: float, qdtype: str) -> np.ndarray:
    """Scales that put most values in range and saturate a few (the quantizer's clamp is tested too)."""
    qmax = 448.0 if qdtype == "float8_e4m3fn" else 127.0
    base = 0.6 * amax / qmax
    s = base * rng.uniform(0.5, 2.0, cols if per_channel else 1)
    return s.astype(np.float32)


def code_steps(gpu: np.ndarray, cpu: np.ndarray, qdtype: str) -> np.ndarray:
    """|difference| in quantization steps between two quantized arrays (ordered code distance)."""
    if qdtype == "int8":
        return np.abs(gpu.astype(np.int32) - cpu.astype(np.int32))

    def ordered(a):  # fp8 sign-magnitude bits -> an integer line where neighbours differ by 1
        a = a.astype(np.int32)
        return np.where(a & 0x80, -(a & 0x7F), a & 0x7F)

    return np.abs(ordered(gpu) - ordered(cpu))


def assert_same_codes(gpu: np.ndarray, cpu: np.ndarray) -> None:
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    diff = np.flatnonzero(gpu.view(np.uint8) != cpu.view(np.uint8))
    assert diff.size == 0, f"{diff.size} codes differ, first at {diff[0]}: gpu {gpu.flat[diff[0]]} cpu {cpu.flat[diff[0]]}"


def assert_codes_within_one_step(gpu: np.ndarray, cpu: np.ndarray, qdtype: str, max_fraction: float = 2e-3) -> None:
    steps = code_steps(gpu, cpu, qdtype)
    assert steps.max() <= 1, f"a code differs by {steps.max()} steps"
    assert np.mean(steps > 0) <= max_fraction, f"{np.mean(steps > 0):.2%} of codes differ"


# ---- quantize ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_matches_cpu_bit_for_bit(rng, dtype, qdtype, per_channel):
    rows, cols = 37, 200
    x = to_dtype(rng.standard_normal((rows, cols)) * 3.0, dtype)
    scale = out_scale(rng, cols, per_channel, 12.0, qdtype)
    gpu = C.quantize(x, scale, dtype=dtype, out_dtype=qdtype)
    cpu = K.quantize(x, scale, dtype=dtype, out_dtype=qdtype)
    assert_same_codes(gpu, cpu)
    assert np.unique(gpu).size > 50  # really quantized, not a constant


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_quantize_special_values_and_ties(qdtype):
    """NaN, infinities, saturation and exact ties (round half to even) as the CPU emulation."""
    specials = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5, 1.5, 2.5, -2.5, 127.5, -128.5, -0.0, 448.0, 464.0,
                -480.0, 2.0**-10, 2.0**-9 * 1.5, 2.0**-10 * 3, 17.0, 18.0, 19.0]
    x = np.array([specials * 2], np.float32)
    scale = np.array([1.0], np.float32)
    gpu = C.quantize(x, scale, dtype="float32", out_dtype=qdtype)
    cpu = K.quantize(x, scale, dtype="float32", out_dtype=qdtype)
    assert_same_codes(gpu, cpu)


def test_quantize_rejects_a_scale_count_that_is_not_1_or_cols():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="scales"):
        C.quantize(x, np.ones(3, np.float32), dtype="float32", out_dtype="int8")


# ---- fused quantized outputs ------------------------------------------------------------------


def run_fused(op: str, rng, dtype: str, rows: int, cols: int, exact_inputs: bool = False):
    """(inputs, a function (kernels module, out_scale?, out_dtype?) -> first output) for one op."""
    def sample(shape, scale=1.0):
        if exact_inputs:  # k/8 with |k| <= 16: squares and their sums are exact in float32 in any order
            return to_dtype(rng.integers(-16, 17, shape) / 8.0, dtype)
        return to_dtype(rng.standard_normal(shape) * scale, dtype)

    w = to_dtype(1.0 + 0.2 * rng.standard_normal(cols), dtype)
    b = to_dtype(0.1 * rng.standard_normal(cols), dtype)
    if op == "rms_norm":
        x = sample((rows, cols))
        return lambda M, s=None, q=None: M.rms_norm(x, w, dtype, 0, 1e-6, s, q)
    if op == "add_rms_norm":
        a, r = sample((rows, cols)), sample((rows, cols))
        return lambda M, s=None, q=None: M.add_rms_norm(a, r, w, dtype, 1e-6, s, q)[0]
    if op == "layer_norm":
        x = sample((rows, cols))
        return lambda M, s=None, q=None: M.layer_norm(x, w, b, dtype, 1e-5, s, q)
    if op == "add_layer_norm":
        a, r = sample((rows, cols)), sample((rows, cols))
        return lambda M, s=None, q=None: M.add_layer_norm(a, r, w, b, dtype, 1e-5, s, q)[0]
    if op == "silu_mul":
        x = sample((rows, 2 * cols), 2.0)
        return lambda M, s=None, q=None: M.silu_mul(x, dtype, s, q)
    if op == "gelu_tanh":
        x = sample((rows, cols), 2.0)
        return lambda M, s=None, q=None: M.gelu_tanh(x, dtype, s, q)
    raise AssertionError(op)


FUSED_OPS = ["rms_norm", "add_rms_norm", "layer_norm", "add_layer_norm", "silu_mul", "gelu_tanh"]
CPU_FUSED_OPS = ["rms_norm", "add_rms_norm", "silu_mul"]  # those _core.kernels binds with out_scale


@pytest.mark.parametrize("op", FUSED_OPS)
@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_output_is_quantize_of_the_float32_result(rng, op, qdtype, per_channel):
    """float32 activations: the unquantized kernel's output is the float32 result itself, so the
    fused output must be exactly `quantize` of it."""
    rows, cols = 9, 384
    run = run_fused(op, rng, "float32", rows, cols)
    result = run(C)
    scale = out_scale(rng, cols, per_channel, float(np.abs(result).max()), qdtype)
    fused = run(C, scale, qdtype)
    assert_same_codes(fused, K.quantize(result, scale, dtype="float32", out_dtype=qdtype))


@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("qdtype", QDTYPES)
def test_fused_rms_norm_matches_cpu_bit_for_bit_on_exact_inputs(rng, op, dtype, qdtype):
    rows, cols = 13, 1024
    run = run_fused(op, rng, dtype, rows, cols, exact_inputs=True)
    scale = out_scale(rng, cols, True, 4.0, qdtype)
    assert_same_codes(run(C, scale, qdtype), run(K, scale, qdtype))


@pytest.mark.parametrize("op", CPU_FUSED_OPS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_output_matches_cpu_emulation(rng, op, dtype, qdtype, per_channel):
    rows, cols = 64, 512
    run = run_fused(op, rng, dtype, rows, cols)
    scale = out_scale(rng, cols, per_channel, 4.0, qdtype)
    assert_codes_within_one_step(run(C, scale, qdtype), run(K, scale, qdtype), qdtype)


def test_add_rms_norm_with_quantized_output_still_writes_the_rounded_sum(rng):
    a, r = to_dtype(rng.standard_normal((5, 256)), "bfloat16"), to_dtype(rng.standard_normal((5, 256)), "bfloat16")
    w = to_dtype(rng.standard_normal(256), "bfloat16")
    scale = np.array([0.02], np.float32)
    _, gpu_sum = C.add_rms_norm(a, r, w, "bfloat16", 1e-6, scale, "float8_e4m3fn")
    _, cpu_sum = K.add_rms_norm(a, r, w, "bfloat16", 1e-6)
    np.testing.assert_array_equal(gpu_sum, cpu_sum)


# ---- quantized GEMMs --------------------------------------------------------------------------


def random_fp8(rng, shape, scale=1.0) -> np.ndarray:
    """Random float8_e4m3fn values as uint8 bits (normal, so small and large exponents both occur)."""
    return (rng.standard_normal(shape) * scale).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def fp8_values(bits: np.ndarray) -> np.ndarray:
    return bits.view(ml_dtypes.float8_e4m3fn).astype(np.float64)


def bias_pair(rng, n: int, out_dtype: str):
    """(bias for the GPU in out_dtype's representation, the same values as float32 for the CPU)."""
    b = to_dtype(rng.standard_normal(n), out_dtype)
    return b, values(b, out_dtype).astype(np.float32)


GEMM_CASES = [(1, None), (3, None), (37, None), (300, None), (1, "gemv"), (2, "gemv"), (4, "gemv")]


@pytest.mark.parametrize("m,algo", GEMM_CASES)
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_matches_cpu_bit_for_bit(rng, m, algo, out_dtype, bias):
    n, k = 192, 2048 + 512  # k past the CPU's 1024-product chunks
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    weight_scale = rng.uniform(0.5, 2.0, n).astype(np.float32) / 127
    input_scale = 0.037
    b_gpu, b_cpu = bias_pair(rng, n, out_dtype) if bias else (None, None)
    gpu = C.int8_linear(x, w, weight_scale, input_scale, b_gpu, out_dtype=out_dtype, algo=algo)
    cpu = K.int8_linear(x, w, weight_scale, input_scale, b_cpu, out_dtype=out_dtype)
    np.testing.assert_array_equal(gpu, cpu)


def test_int8_linear_in_row_chunks_matches_cpu(rng):
    """m * n * 4 bytes beyond the 64 MiB int32 scratch: the GEMM runs in chunks of 1024 rows, the last
    one (5 rows) padded to cuBLASLt's minimum."""
    m, n, k = 1029, 16384, 32
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    weight_scale = rng.uniform(0.5, 2.0, n).astype(np.float32) / 127
    gpu = C.int8_linear(x, w, weight_scale, 0.02, out_dtype="bfloat16")
    cpu = K.int8_linear(x, w, weight_scale, 0.02, out_dtype="bfloat16")
    np.testing.assert_array_equal(gpu, cpu)


def assert_fp8_gemm_close(gpu, cpu, x, w, alpha, out_dtype):
    g, c = values(gpu, out_dtype), values(cpu, out_dtype)
    assert not np.isnan(g).any(), "an output element was never written (still NaN poison)"
    abs_dot = np.abs(fp8_values(x)) @ np.abs(fp8_values(w)).T * alpha
    bound = 2 * OUT_EPS[out_dtype] * np.abs(c) + 2.0**-13 * abs_dot + 1e-30
    err = np.abs(g - c)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), f"|gpu - cpu| = {err[worst]:.3g} > {bound[worst]:.3g} at {worst}"


@pytest.mark.parametrize("m,algo", GEMM_CASES)
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("bias", [False, True])
def test_fp8_linear_matches_cpu_up_to_summation_order(rng, m, algo, out_dtype, bias):
    n, k = 256, 1024
    x, w = random_fp8(rng, (m, k), 8.0), random_fp8(rng, (n, k), 0.5)
    weight_scale, input_scale = 0.0123, 0.05
    b_gpu, b_cpu = bias_pair(rng, n, out_dtype) if bias else (None, None)
    gpu = C.fp8_linear(x, w, weight_scale, input_scale, b_gpu, out_dtype=out_dtype, algo=algo)
    cpu = K.fp8_linear(x, w, weight_scale, input_scale, b_cpu, out_dtype=out_dtype)
    assert_fp8_gemm_close(gpu, cpu, x, w, np.float32(input_scale) * np.float32(weight_scale), out_dtype)


def assert_quantized_gemvs_match_cpu(rng, m, n, k, out_dtype):
    """The int8 GEMV bit for bit, the fp8 one up to summation order, against the CPU's."""
    x8, w8 = rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = rng.uniform(0.5, 2.0, n).astype(np.float32) / 127
    np.testing.assert_array_equal(C.int8_linear(x8, w8, ws, 0.03, out_dtype=out_dtype, algo="gemv"),
                                  K.int8_linear(x8, w8, ws, 0.03, out_dtype=out_dtype))
    x, w = random_fp8(rng, (m, k), 8.0), random_fp8(rng, (n, k), 0.5)
    gpu = C.fp8_linear(x, w, 0.0123, 0.05, out_dtype=out_dtype, algo="gemv")
    cpu = K.fp8_linear(x, w, 0.0123, 0.05, out_dtype=out_dtype)
    assert_fp8_gemm_close(gpu, cpu, x, w, np.float32(0.05) * np.float32(0.0123), out_dtype)


@pytest.mark.parametrize("m", [1, 3, 4])
@pytest.mark.parametrize("k", [48, 1040, 4096 + 16])
def test_quantized_gemv_where_k_ends_inside_a_step(rng, m, k):
    # The GEMV's warps split k in 128-k steps; a k that ends inside one (k % 16 == 0 only) must
    # leave the missing bytes out of both w and x, and a warp may get no step at all (k = 48).
    assert_quantized_gemvs_match_cpu(rng, m, 48, k, "float32")


@pytest.mark.parametrize("m", [1, 4])
def test_quantized_gemv_on_a_large_grid(rng, m):
    # n = 9600: 600 blocks, more than two an SM (the 8B qkv and gate_up side of the GEMV's launch
    # choice; the cases above are small grids).
    assert_quantized_gemvs_match_cpu(rng, m, 9600, 1024 + 16, "bfloat16")


@pytest.mark.parametrize("fn", ["fp8_linear", "int8_linear"])
@pytest.mark.parametrize("n,k", [(64, 40), (40, 64)])
def test_quantized_linear_rejects_shapes_not_multiple_of_16(fn, n, k):
    x = np.ones((2, k), np.int8 if fn == "int8_linear" else np.uint8)
    w = np.ones((n, k), np.int8 if fn == "int8_linear" else np.uint8)
    scale = np.ones(n, np.float32) if fn == "int8_linear" else 1.0
    with pytest.raises(ValueError, match="multiples of 16"):
        getattr(C, fn)(x, w, scale, 1.0, out_dtype="bfloat16")


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_autotuned_quantized_tactics_run_and_match(rng, qdtype):
    n, k = 256, 512
    tuned = _core.cuda_autotune_gemm(n, k, qdtype, "bfloat16", True, [1, 4, 64], 8, 5)
    assert [t["m"] for t in tuned] == [1, 4, 64]
    assert all((t["algo"] == "gemv" or len(t["algo"]) == 128) and t["best_us"] <= t["default_us"] for t in tuned)
    b_gpu, b_cpu = bias_pair(rng, n, "bfloat16")
    for t in tuned:
        m = t["m"]
        if qdtype == "int8":
            x, w = rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-127, 128, (n, k), dtype=np.int8)
            ws = rng.uniform(0.5, 2.0, n).astype(np.float32) / 127
            gpu = C.int8_linear(x, w, ws, 0.03, b_gpu, out_dtype="bfloat16", algo=t["algo"])
            np.testing.assert_array_equal(gpu, K.int8_linear(x, w, ws, 0.03, b_cpu, out_dtype="bfloat16"))
        else:
            x, w = random_fp8(rng, (m, k), 4.0), random_fp8(rng, (n, k), 0.5)
            gpu = C.fp8_linear(x, w, 0.01, 0.2, b_gpu, out_dtype="bfloat16", algo=t["algo"])
            cpu = K.fp8_linear(x, w, 0.01, 0.2, b_cpu, out_dtype="bfloat16")
            assert_fp8_gemm_close(gpu, cpu, x, w, np.float32(0.2) * np.float32(0.01), "bfloat16")
