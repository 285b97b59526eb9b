"""Quantized CPU kernels (op set v2) against numpy references of the same quantized math: the
conversions bit for bit, the GEMMs to float32 summation order (INT8: exactly)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from trtllm_build.quantization import numerics
from trtllm_runtime import _core

K = _core.kernels
FP8 = ml_dtypes.float8_e4m3fn
RNG = np.random.default_rng(0)


def ref_quantize(x: np.ndarray, scale, dtype: str) -> np.ndarray:
    """Independent statement of the contract: convert(x * float32(1 / scale)), nearest even, saturating."""
    inv = (np.float32(1) / np.asarray(scale, np.float32)).astype(np.float32)
    v = (x.astype(np.float32) * inv).astype(np.float32)
    if dtype == "float8_e4m3fn":
        return np.clip(v, -448, 448).astype(FP8).view(np.uint8)
    return np.clip(np.rint(np.nan_to_num(v)), -128, 127).astype(np.int8)


def test_fp8_conversion_matches_ml_dtypes_on_every_code_and_the_midpoints_between():
    codes = np.arange(256, dtype=np.uint8).view(FP8).astype(np.float32)
    finite = np.sort(np.unique(codes[np.isfinite(codes)]))
    mids = (finite[:-1].astype(np.float64) + finite[1:]) / 2  # ties: nearest even must decide
    x = np.concatenate([finite, mids.astype(np.float32), np.nextafter(mids.astype(np.float32), np.inf),
                        np.nextafter(mids.astype(np.float32), -np.inf), [448.0, 449.0, 464.0, 1e6, -1e6, np.inf,
                                                                         -np.inf, 1e-9, -1e-9, 2.0**-10]]).astype(np.float32)
    x = x.reshape(1, -1)
    got = K.quantize(x, np.ones(1, np.float32), dtype="float32", out_dtype="float8_e4m3fn")
    np.testing.assert_array_equal(got, ref_quantize(x, [1.0], "float8_e4m3fn"))
    assert got.view(FP8).astype(np.float32).max() == 448 and got.view(FP8).astype(np.float32).min() == -448


def test_int8_conversion_rounds_half_to_even_and_saturates_at_minus_128_and_127():
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 200.0, -128.4, -128.6, -1e9, np.nan]], np.float32)
    got = K.quantize(x, np.ones(1, np.float32), dtype="float32", out_dtype="int8")
    np.testing.assert_array_equal(got[0], [0, 2, 2, 0, -2, -2, 126, 127, 127, -128, -128, -128, 0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("out_dtype", ["float8_e4m3fn", "int8"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_op_is_bit_exact(dtype, out_dtype, per_channel):
    x = (RNG.standard_normal((7, 48)) * 3).astype(np.float32)
    bits = K.from_float(x, dtype) if dtype != "float32" else x
    xr = K.to_float(bits, dtype) if dtype != "float32" else x
    scale = (RNG.uniform(0.005, 0.05, 48 if per_channel else 1)).astype(np.float32)
    got = K.quantize(bits, scale, dtype=dtype, out_dtype=out_dtype)
    np.testing.assert_array_equal(got, ref_quantize(xr, scale, out_dtype))


def test_quantize_rejects_zero_or_nan_scales():
    x = np.ones((2, 4), np.float32)
    for bad in (0.0, np.nan, -1.0, np.inf):
        with pytest.raises(ValueError, match="finite and > 0"):
            K.quantize(x, np.array([bad], np.float32), dtype="float32", out_dtype="int8")


def rms_norm_f32(x, w, eps):
    x = x.astype(np.float32)
    return x * (np.float32(1) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + np.float32(eps))) * w


@pytest.mark.parametrize("out_dtype", ["float8_e4m3fn", "int8"])
def test_rms_norm_writes_its_float32_result_quantized(out_dtype):
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    w = RNG.uniform(0.5, 1.5, 64).astype(np.float32)
    scale = np.array([0.01], np.float32)
    got = K.rms_norm(x, w, "float32", eps=1e-6, out_scale=scale, out_dtype=out_dtype)
    ref = ref_quantize(rms_norm_f32(x, w, 1e-6), scale, out_dtype)
    # float32 sums in another order may move a value across a rounding boundary: allow one step
    if out_dtype == "int8":
        assert np.max(np.abs(got.astype(int) - ref.astype(int))) <= 1
        assert np.mean(got == ref) > 0.99
    else:
        g, r = got.view(FP8).astype(np.float32), ref.view(FP8).astype(np.float32)
        np.testing.assert_allclose(g, r, rtol=0.07)
        assert np.mean(got == ref) > 0.99


def test_add_rms_norm_quantizes_the_normed_output_and_keeps_the_sum():
    a, b = (RNG.standard_normal((4, 32)).astype(np.float32) for _ in range(2))
    w = np.ones(32, np.float32)
    normed, total = K.add_rms_norm(a, b, w, "float32", eps=1e-6, out_scale=np.array([0.02], np.float32),
                                   out_dtype="int8")
    plain, total_ref = K.add_rms_norm(a, b, w, "float32", eps=1e-6)
    np.testing.assert_array_equal(total, total_ref)
    np.testing.assert_array_equal(normed, ref_quantize(plain, [0.02], "int8"))


@pytest.mark.parametrize("per_channel", [False, True])
def test_silu_mul_quantizes_per_tensor_or_per_channel(per_channel):
    x = RNG.standard_normal((6, 2 * 40)).astype(np.float32)
    scale = RNG.uniform(0.003, 0.01, 40 if per_channel else 1).astype(np.float32)
    got = K.silu_mul(x, "float32", out_scale=scale, out_dtype="int8")
    plain = K.silu_mul(x, "float32")
    np.testing.assert_array_equal(got, ref_quantize(plain, scale, "int8"))


def test_int8_linear_accumulates_exactly_in_int32():
    m, n, k = 5, 24, 3000  # k > 1024: more than one exact float32 chunk
    x = RNG.integers(-128, 128, (m, k), dtype=np.int8)
    w = RNG.integers(-127, 128, (n, k), dtype=np.int8)
    w_scale = RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    got = K.int8_linear(x, w, w_scale, 0.05, bias, out_dtype="float32")
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    alpha = (np.float32(0.05) * w_scale).astype(np.float32)
    ref = ((acc.astype(np.float32) * alpha).astype(np.float32) + bias).astype(np.float32)
    np.testing.assert_array_equal(got, ref)


def test_fp8_linear_scales_the_float32_sum_of_exact_fp8_products():
    m, n, k = 3, 16, 256
    x = numerics.to_fp8(RNG.standard_normal((m, k)) * 50)
    w = numerics.to_fp8(RNG.standard_normal((n, k)) * 50)
    got = K.fp8_linear(x.view(np.uint8), w.view(np.uint8), 0.002, 0.003, out_dtype="float32")
    ref = (x.astype(np.float64) @ w.astype(np.float64).T) * float(np.float32(0.003) * np.float32(0.002))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("bits,group", [(8, 64), (4, 64), (4, 16)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_weight_only_linear_dequantizes_in_the_activation_dtype(bits, group, dtype):
    m, n, k = 4, 20, 64
    np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[dtype]
    w = RNG.standard_normal((n, k)).astype(np.float32)
    q, scale = numerics.quantize_groupwise(w, bits, group, np.dtype(np_dtype))
    packed = numerics.pack_int4(q) if bits == 4 else q
    np.testing.assert_array_equal(numerics.unpack_int4(packed) if bits == 4 else packed, q)
    x = RNG.standard_normal((m, k)).astype(np_dtype)
    pre = RNG.uniform(0.5, 2.0, k).astype(np_dtype)
    got = K.weight_only_linear(x, packed, scale, dtype=dtype, weight_bits=bits, group_size=group,
                               pre_quant_scale=pre, out_dtype="float32")
    deq = numerics.dequantize_weight_only(packed, scale, bits)  # rounded to the activation dtype
    xs = (x.astype(np.float32) * pre.astype(np.float32)).astype(np_dtype).astype(np.float64)
    ref = xs @ deq.astype(np.float64).T
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_int4_packing_puts_even_inputs_in_the_low_nibble():
    q = np.array([[1, -2, 7, -8]], np.int8)
    np.testing.assert_array_equal(numerics.pack_int4(q), [[0xE1, 0x87]])


def test_attention_with_fp8_kv_cache_reads_back_the_quantized_keys_and_values():
    h, h_kv, d, t, tpb = 4, 2, 16, 9, 4
    qkv = RNG.standard_normal((t, (h + 2 * h_kv) * d)).astype(np.float32)
    blocks = np.array([[2, 0, 1]], np.int32)
    kv = np.zeros((3, 2, h_kv, tpb, d), np.uint8)
    scale = 0.01
    out = K.attention(qkv, kv, np.array([0], np.int32), np.array([t], np.int32), blocks, dtype="float32",
                      num_heads=h, num_kv_heads=h_kv, head_dim=d, kv_scale=scale)
    q, k, v = np.split(qkv, [h * d, (h + h_kv) * d], axis=1)
    kq = ref_quantize(k, [scale], "float8_e4m3fn").view(FP8).astype(np.float32) * np.float32(scale)
    vq = ref_quantize(v, [scale], "float8_e4m3fn").view(FP8).astype(np.float32) * np.float32(scale)
    # the cache holds the fp8 codes, block by block
    cached_k = np.concatenate([kv[b, 0] for b in blocks[0]], axis=1)[:, :t].transpose(1, 0, 2).reshape(t, -1)
    np.testing.assert_array_equal(cached_k, ref_quantize(k, [scale], "float8_e4m3fn"))
    float_kv = np.zeros((3, 2, h_kv, tpb, d), np.float32)
    ref = K.attention(np.concatenate([q, kq, vq], axis=1), float_kv, np.array([0], np.int32), np.array([t], np.int32),
                      blocks, dtype="float32", num_heads=h, num_kv_heads=h_kv, head_dim=d)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
