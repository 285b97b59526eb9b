"""CPU kernels of plugins/ (through _core.kernels) against independent numpy float64 references.

Inputs are random and exactly representable in the tested dtype, so the references see the same
values the kernels do. Tolerances:
  float32:          |got - ref| <= 1e-5 |ref| + atol
  bfloat16/float16: |got - ref| <= eps |ref| + atol, eps = the dtype's machine epsilon: the kernel
                    rounds a float32 result once (<= 1/2 ulp), and float32 error can move it
                    across a rounding boundary (<= 1 ulp <= eps |ref|).
  atol covers float32 accumulation where terms cancel (stated per test, relative to the terms).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from trtllm_runtime import _core

K = _core.kernels

DTYPES = ["float32", "bfloat16", "float16"]
NP_DTYPE = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
RTOL = {"float32": 1e-5, "bfloat16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps), "float16": float(np.finfo(np.float16).eps)}


def to_kernel(x: np.ndarray, dtype: str) -> np.ndarray:
    """float values -> the array a kernel takes: float32, or uint16 bits of bf16/fp16."""
    y = np.ascontiguousarray(np.asarray(x, dtype=np.float64).astype(np.float32))
    return y if dtype == "float32" else y.astype(NP_DTYPE[dtype]).view(np.uint16)


def values(a: np.ndarray, dtype: str) -> np.ndarray:
    """A kernel array -> the float64 values it holds."""
    return (a if dtype == "float32" else a.view(NP_DTYPE[dtype])).astype(np.float64)


def rand(rng: np.random.Generator, shape, dtype: str, scale: float = 1.0, shift: float = 0.0):
    """Random normal values rounded to dtype: (kernel array, float64 values)."""
    a = to_kernel(rng.standard_normal(shape) * scale + shift, dtype)
    return a, values(a, dtype)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values as they read back after a float32 computation stores them in dtype."""
    return values(to_kernel(x, dtype), dtype)


def assert_close(got: np.ndarray, ref: np.ndarray, dtype: str, atol: float | np.ndarray = 0.0) -> None:
    got_v = values(got, dtype)
    assert got_v.shape == ref.shape
    bound = RTOL[dtype] * np.abs(ref) + atol
    err = np.abs(got_v - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{dtype}: |got - ref| = {err[worst]:.3g} > {bound[worst] if np.ndim(bound) else bound:.3g} at {worst} (got {got_v[worst]!r}, ref {ref[worst]!r})"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# dtype conversions (dtype.h scalar helpers and the kernels' vectorized row converters)

ALL_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("impl", ["scalar", "row"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_16_bit_pattern_widens_like_ml_dtypes_and_round_trips(dtype: str, impl: str) -> None:
    ref = ALL_BITS.view(NP_DTYPE[dtype]).astype(np.float32)
    wide = K.to_float(ALL_BITS, dtype, impl)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(wide), nan)
    assert np.array_equal(wide[~nan].view(np.uint32), ref[~nan].view(np.uint32))  # bitwise: keeps -0.0
    back = K.from_float(wide, dtype, impl)
    assert np.array_equal(back[~nan], ALL_BITS[~nan])
    assert np.all(np.isnan(back[nan].view(NP_DTYPE[dtype])))


def _hard_float32_cases(dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Random floats plus exact ties, subnormals, overflow and specials for `dtype`."""
    cases = [(rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 6, 20000)).astype(np.float32)]
    with np.errstate(invalid="ignore"):
        finite = ALL_BITS.view(NP_DTYPE[dtype]).astype(np.float64)
    finite = np.unique(finite[np.isfinite(finite)])
    mids = (finite[:-1] + finite[1:]) / 2  # exact in float32: ties, incl. subnormal ones
    cases.append(mids.astype(np.float32))
    cases.append(np.nextafter(mids.astype(np.float32), np.float32(np.inf)))
    cases.append(np.nextafter(mids.astype(np.float32), np.float32(-np.inf)))
    raw = rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
    cases.append(raw.view(np.float32))  # any pattern: float32 subnormals, NaNs, infs, huge values
    big = float(ml_dtypes.finfo(NP_DTYPE[dtype]).max)
    tiny = float(ml_dtypes.finfo(NP_DTYPE[dtype]).smallest_subnormal)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, big * 1.0009, big * 1.002, big * 4, tiny, tiny / 2,
               tiny * 0.500001, tiny * 1.5, 1e-45, 3.4e38, 65519.99, 65520.0, 65536.0]
    with np.errstate(over="ignore"):
        cases.append(np.array(special, dtype=np.float32))
    return np.concatenate(cases)


@pytest.mark.parametrize("impl", ["scalar", "row"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_float32_rounds_to_16_bits_like_numpy(dtype: str, impl: str, rng: np.random.Generator) -> None:
    x = _hard_float32_cases(dtype, rng)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(NP_DTYPE[dtype]).view(np.uint16)
    got = K.from_float(x, dtype, impl)
    nan = np.isnan(x)
    assert np.all(np.isnan(got[nan].view(NP_DTYPE[dtype])))
    bad = np.nonzero(got[~nan] != ref[~nan])[0]
    assert bad.size == 0, f"{bad.size} mismatches, first: {x[~nan][bad[:5]]!r} -> {got[~nan][bad[:5]]} vs {ref[~nan][bad[:5]]}"


# ---------------------------------------------------------------------------------------------
# gemm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_dtype", DTYPES)
@pytest.mark.parametrize("logits", [False, True], ids=["out=dtype", "out=float32"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_gemm_matches_x_times_weight_transposed(dtype, weight_dtype, logits, with_bias, rng) -> None:
    out_dtype = "float32" if logits else dtype
    # m 1, 7, 20: the streaming small-batch kernel (partial 4-row tiles); 300: sgemm, more than
    # one 256-row block. k 100 and n 83 leave tails after the 8-wide loads and 2-row tiles.
    for m, k, n in ((1, 96, 80), (7, 100, 83), (20, 96, 80), (300, 100, 300)):
        x, x64 = rand(rng, (m, k), dtype)
        w, w64 = rand(rng, (n, k), weight_dtype, scale=0.2)
        b, b64 = rand(rng, (n,), weight_dtype) if with_bias else (None, np.zeros(n))
        y = K.gemm(x, w, b, dtype=dtype, weight_dtype=weight_dtype, out_dtype=out_dtype)
        ref = x64 @ w64.T + b64
        # float32 accumulation error is bounded relative to the sum of |terms|.
        terms = np.abs(x64) @ np.abs(w64).T + np.abs(b64)
        assert_close(y, ref, out_dtype, atol=1e-6 * terms)
        prepared = K.prepare_gemm_weight(w, b, weight_dtype=weight_dtype)  # once, at engine load
        assert np.array_equal(K.gemm(x, prepared, dtype=dtype, out_dtype=out_dtype), y)


def test_gemm_rejects_mismatched_shapes(rng) -> None:
    x, _ = rand(rng, (3, 8), "float32")
    w, _ = rand(rng, (4, 9), "float32")
    with pytest.raises(ValueError, match="weight has shape"):
        K.gemm(x, w, dtype="float32")
    with pytest.raises(ValueError, match="dtype must be"):
        K.gemm(x, x, dtype="int8")


# ---------------------------------------------------------------------------------------------
# norms


def _rms_ref(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _layer_norm_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_over_whole_rows(dtype, rng) -> None:
    x, x64 = rand(rng, (37, 320), dtype, scale=3.0, shift=0.5)
    w, w64 = rand(rng, (320,), dtype, shift=1.0)
    y = K.rms_norm(x, w, dtype, eps=1e-6)
    assert_close(y, _rms_ref(x64, w64, 1e-6), dtype, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_per_head_chunks_like_qk_norm(dtype, rng) -> None:
    heads, head_dim = 5, 64
    x, x64 = rand(rng, (9, heads * head_dim), dtype, scale=2.0)
    w, w64 = rand(rng, (head_dim,), dtype, shift=1.0)
    y = K.rms_norm(x, w, dtype, chunk=head_dim, eps=1e-5)
    ref = _rms_ref(x64.reshape(9, heads, head_dim), w64, 1e-5).reshape(9, heads * head_dim)
    assert_close(y, ref, dtype, atol=1e-6)


def test_rms_norm_rejects_a_chunk_that_does_not_divide_the_row(rng) -> None:
    x, _ = rand(rng, (2, 10), "float32")
    w, _ = rand(rng, (4,), "float32")
    with pytest.raises(ValueError, match="must divide"):
        K.rms_norm(x, w, "float32", chunk=4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm_rounds_the_sum_then_norms_the_rounded_sum(dtype, rng) -> None:
    a, a64 = rand(rng, (23, 256), dtype, scale=4.0)
    b, b64 = rand(rng, (23, 256), dtype)
    w, w64 = rand(rng, (256,), dtype, shift=1.0)
    normed, total = K.add_rms_norm(a, b, w, dtype, eps=1e-6)
    # a + b of two dtype values is exact in float64 and float32, so the stored sum is exact to the bit.
    assert np.array_equal(total, to_kernel(a64 + b64, dtype))
    ref = _rms_ref(round_to(a64 + b64, dtype), w64, 1e-6)
    assert_close(normed, ref, dtype, atol=1e-6)
    if dtype != "float32":
        # Norming the unrounded sum differs in a visible fraction of elements; from the rounded sum
        # the kernel agrees with the reference to the bit except at rare rounding boundaries.
        same = np.mean(normed == to_kernel(ref, dtype))
        assert same > 0.99, f"only {same:.3f} of elements match the norm of the rounded sum"


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(dtype, rng) -> None:
    x, x64 = rand(rng, (19, 192), dtype, scale=2.0, shift=-1.0)
    w, w64 = rand(rng, (192,), dtype, shift=1.0)
    b, b64 = rand(rng, (192,), dtype)
    y = K.layer_norm(x, w, b, dtype, eps=1e-5)
    ref = _layer_norm_ref(x64, w64, b64, 1e-5)
    assert_close(y, ref, dtype, atol=1e-5 * (np.abs(w64) + np.abs(b64)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_layer_norm_rounds_the_sum_first(dtype, rng) -> None:
    a, a64 = rand(rng, (11, 160), dtype, scale=3.0)
    b, b64 = rand(rng, (11, 160), dtype)
    w, w64 = rand(rng, (160,), dtype, shift=1.0)
    bias, bias64 = rand(rng, (160,), dtype)
    normed, total = K.add_layer_norm(a, b, w, bias, dtype, eps=1e-5)
    assert np.array_equal(total, to_kernel(a64 + b64, dtype))
    ref = _layer_norm_ref(round_to(a64 + b64, dtype), w64, bias64, 1e-5)
    assert_close(normed, ref, dtype, atol=1e-5 * (np.abs(w64) + np.abs(bias64)))
    if dtype != "float32":
        assert np.mean(normed == to_kernel(ref, dtype)) > 0.99


# ---------------------------------------------------------------------------------------------
# elementwise


@pytest.mark.parametrize("dtype", DTYPES)
def test_add(dtype, rng) -> None:
    a, a64 = rand(rng, (5, 3001), dtype, scale=10.0)  # not a multiple of the kernel's block
    b, b64 = rand(rng, (5, 3001), dtype)
    assert_close(K.add(a, b, dtype), a64 + b64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(dtype, rng) -> None:
    x, x64 = rand(rng, (13, 2 * 1100), dtype, scale=3.0)
    gate, up = x64[:, :1100], x64[:, 1100:]
    ref = gate / (1.0 + np.exp(-gate)) * up
    assert_close(K.silu_mul(x, dtype), ref, dtype, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_tanh(dtype, rng) -> None:
    x, x64 = rand(rng, (7, 999), dtype, scale=3.0)
    ref = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))
    assert_close(K.gelu_tanh(x, dtype), ref, dtype, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_bias(dtype, rng) -> None:
    x, x64 = rand(rng, (6, 1500), dtype, scale=2.0)
    b, b64 = rand(rng, (1500,), dtype)
    assert_close(K.add_bias(x, b, dtype), x64 + b64, dtype)


# ---------------------------------------------------------------------------------------------
# embedding / gather_rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_copies_table_rows(dtype, rng) -> None:
    table, _ = rand(rng, (50, 24), dtype)
    ids = rng.integers(0, 50, 17).astype(np.int32)
    assert np.array_equal(K.embedding(ids, table, dtype), table[ids])


def test_embedding_rejects_out_of_vocab_ids(rng) -> None:
    table, _ = rand(rng, (50, 8), "float32")
    with pytest.raises(ValueError, match=r"ids\[1\] = 50 is outside \[0, 50\)"):
        K.embedding(np.array([3, 50], dtype=np.int32), table, "float32")


def test_gather_rows_in_the_requested_order(rng) -> None:
    x = rng.standard_normal((9, 13)).astype(np.float32)
    rows = np.array([8, 0, 3, 3], dtype=np.int32)
    assert np.array_equal(K.gather_rows(x, rows), x[rows])


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.uint8])
def test_concat_shards_puts_rank_r_in_the_r_th_column_block(rng, dtype) -> None:
    gathered = rng.integers(0, 250, (3, 5, 7)).astype(dtype)  # [tp, rows, shard_cols], as an all-gather leaves it
    assert np.array_equal(K.concat_shards(gathered), np.concatenate(list(gathered), axis=1))


# ---------------------------------------------------------------------------------------------
# rope_inv_freq vs transformers

ROPE_CASES = {
    "default": dict(rope_type="default", rope_theta=10000.0),
    "default_1e6": dict(rope_type="default", rope_theta=1000000.0),
    "linear": dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    "llama3": dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=8192),
}


def _kernel_inv_freq(head_dim: int, p: dict) -> np.ndarray:
    scaling = "none" if p["rope_type"] == "default" else p["rope_type"]
    return K.rope_inv_freq(head_dim, p["rope_theta"], scaling, p.get("factor", 1.0), p.get("low_freq_factor", 1.0),
                           p.get("high_freq_factor", 4.0), p.get("original_max_position_embeddings", 8192))


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope_inv_freq_matches_transformers(case: str, head_dim: int) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    # modeling_rope_utils and the base config import in a fraction of a model module's time.
    from transformers.configuration_utils import PreTrainedConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(ROPE_CASES[case])
    if params["rope_type"] == "default":
        # The models' compute_default_rope_parameters is the first line of the linear init;
        # dividing by factor 1.0 is exact.
        params.update(rope_type="linear", factor=1.0)
    config = PreTrainedConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                              max_position_embeddings=16384, rope_parameters=params)
    ref, attention_scaling = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
    assert attention_scaling == 1.0
    ref = ref.numpy()
    got = _kernel_inv_freq(head_dim, ROPE_CASES[case])
    assert got.dtype == np.float32 and ref.dtype == np.float32
    # Same float32 operations in the same order; torch's vectorized powf (SLEEF) is itself up to
    # 1 ulp off the correctly rounded power that libm gives, so allow that one ulp.
    np.testing.assert_array_max_ulp(got, ref, maxulp=1)


def _inv_freq64(head_dim: int, p: dict) -> np.ndarray:
    """Independent float64 inverse frequencies (Llama 3.1's published scaling rule)."""
    inv = p["rope_theta"] ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if p["rope_type"] == "linear":
        inv = inv / p["factor"]
    elif p["rope_type"] == "llama3":
        wavelen = 2 * np.pi / inv
        low_wl = p["original_max_position_embeddings"] / p["low_freq_factor"]
        high_wl = p["original_max_position_embeddings"] / p["high_freq_factor"]
        smooth = (p["original_max_position_embeddings"] / wavelen - p["low_freq_factor"]) / (
            p["high_freq_factor"] - p["low_freq_factor"])
        inv = np.where(wavelen > low_wl, inv / p["factor"],
                       np.where(wavelen < high_wl, inv, (1 - smooth) * inv / p["factor"] + smooth * inv))
    return inv


@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope_inv_freq_matches_the_float64_formula(case: str) -> None:
    got = _kernel_inv_freq(128, ROPE_CASES[case]).astype(np.float64)
    np.testing.assert_allclose(got, _inv_freq64(128, ROPE_CASES[case]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# attention


class PagedAttentionCase:
    """One layer's KV pool, requests with shuffled block tables, and a float64 reference."""

    def __init__(self, rng, dtype, num_heads, num_kv_heads, head_dim, tokens_per_block, rope, qk_norm,
                 max_len=400, num_requests=4):
        self.rng, self.dtype = rng, dtype
        self.h, self.h_kv, self.d, self.tpb = num_heads, num_kv_heads, head_dim, tokens_per_block
        self.max_blocks = -(-max_len // tokens_per_block)
        num_blocks = num_requests * self.max_blocks + 3  # a few blocks nobody owns
        self.block_table = rng.permutation(num_blocks)[: num_requests * self.max_blocks]
        self.block_table = self.block_table.reshape(num_requests, self.max_blocks).astype(np.int32)
        # Garbage in the pool: whatever the kernel does not write must stay as it was.
        self.kv, _ = rand(rng, (num_blocks, 2, num_kv_heads, tokens_per_block, head_dim), dtype, scale=100.0)
        self.kv_before = self.kv.copy()
        self.inv_freq = None if rope is None else _inv_freq64(head_dim, ROPE_CASES[rope]).astype(np.float32)
        self.q_norm = self.k_norm = None
        self.norm64 = None
        if qk_norm:
            (self.q_norm, qn64), (self.k_norm, kn64) = (rand(rng, (head_dim,), dtype, 0.3, 1.0) for _ in range(2))
            self.norm64 = (qn64, kn64)
        self.k_ref = [np.zeros((0, num_kv_heads, head_dim)) for _ in range(num_requests)]
        self.v_ref = [np.zeros((0, num_kv_heads, head_dim)) for _ in range(num_requests)]

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # The angle is one float32 product, as the op set (and Hugging Face) define it.
        angle = (pos.astype(np.float32)[:, None] * self.inv_freq[None, :]).astype(np.float64)
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        half = self.d // 2
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def _cache_rows(self, r: int, length: int, which: int) -> np.ndarray:
        """What the kernel's cache holds for positions [0, length) of request r: [length, h_kv, d]."""
        pos = np.arange(length)
        blocks = self.block_table[r, pos // self.tpb]
        return values(self.kv[blocks, which, :, pos % self.tpb, :], self.dtype)

    def step(self, requests: list[int], past_len: list[int], new_len: list[int]) -> None:
        h, h_kv, d, dtype = self.h, self.h_kv, self.d, self.dtype
        width = (h + 2 * h_kv) * d
        qkv, qkv64 = rand(self.rng, (sum(new_len), width), dtype, scale=1.5)
        table = self.block_table[requests]
        out = K.attention(qkv, self.kv, np.array(past_len, np.int32), np.array(new_len, np.int32), table,
                          dtype=dtype, num_heads=h, num_kv_heads=h_kv, head_dim=d, inv_freq=self.inv_freq,
                          q_norm=self.q_norm, k_norm=self.k_norm, qk_norm_eps=1e-6)
        assert out.shape == (sum(new_len), h * d)
        out64 = values(out, dtype).reshape(-1, h, d)
        start = 0
        group = h // h_kv
        for r, past, n in zip(requests, past_len, new_len):
            assert past == len(self.k_ref[r]), "test bug: steps must continue each request's cache"
            rows = qkv64[start:start + n]
            q = rows[:, : h * d].reshape(n, h, d)
            k = rows[:, h * d:(h + h_kv) * d].reshape(n, h_kv, d)
            v = rows[:, (h + h_kv) * d:].reshape(n, h_kv, d)
            if self.norm64 is not None:
                q, k = _rms_ref(q, self.norm64[0], 1e-6), _rms_ref(k, self.norm64[1], 1e-6)
            pos = past + np.arange(n)
            if self.inv_freq is not None:
                q, k = self._rope(q, pos), self._rope(k, pos)
            self.k_ref[r] = np.concatenate([self.k_ref[r], k])
            self.v_ref[r] = np.concatenate([self.v_ref[r], v])
            total = past + n
            # The write path: every position so far, old and new, holds k and v rounded once.
            kc, vc = self._cache_rows(r, total, 0), self._cache_rows(r, total, 1)
            assert_close(to_kernel(kc, dtype), self.k_ref[r], dtype, atol=1e-6)
            assert_close(to_kernel(vc, dtype), self.v_ref[r], dtype)
            # The attention math, from the values the cache holds (checked just above).
            scores = np.einsum("qhd,khd->hqk", q, np.repeat(kc, group, axis=1)) / math.sqrt(d)
            scores = np.where(np.arange(total)[None, None, :] <= pos[None, :, None], scores, -np.inf)
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            ref = np.einsum("hqk,khd->qhd", p, np.repeat(vc, group, axis=1))
            assert_close(to_kernel(out64[start:start + n], dtype), ref, dtype, atol=1e-6 * np.abs(vc).max())
            start += n
        self._check_untouched()

    def _check_untouched(self) -> None:
        written = np.zeros(self.kv.shape[:1] + self.kv.shape[3:4], dtype=bool)  # [block, slot]
        for r, k in enumerate(self.k_ref):
            pos = np.arange(len(k))
            written[self.block_table[r, pos // self.tpb], pos % self.tpb] = True
        keep = ~written
        assert np.array_equal(self.kv.transpose(0, 3, 1, 2, 4)[keep], self.kv_before.transpose(0, 3, 1, 2, 4)[keep])


ATTENTION_CONFIGS = {
    # name: (num_heads, num_kv_heads, head_dim, tokens_per_block, rope, qk_norm)
    "mha-d64-tpb4-rope": (4, 4, 64, 4, "default", False),
    "gqa3-d128-tpb16-llama3-qknorm": (6, 2, 128, 16, "llama3", True),
    "gqa3-d64-tpb16-norope-qknorm": (3, 1, 64, 16, None, True),
    "mha-d128-tpb4-linear": (2, 2, 128, 4, "linear", False),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", list(ATTENTION_CONFIGS))
def test_paged_attention_prefill_chunks_and_decode(config: str, dtype: str, rng) -> None:
    c = PagedAttentionCase(rng, dtype, *ATTENTION_CONFIGS[config])
    # Iteration 1: prefills from 0, long (tiled sgemm path) and short (loop path), and one token.
    c.step([0, 1, 2], past_len=[0, 0, 0], new_len=[37, 5, 1])
    # Iteration 2: chunked prefills continuing their caches, a decode; requests out of order.
    c.step([2, 0, 1], past_len=[1, 37, 5], new_len=[9, 20, 3])
    # Iteration 3: decodes next to a long prefill that spans several query and key tiles.
    c.step([0, 3, 1, 2], past_len=[57, 0, 8, 10], new_len=[1, 300, 1, 1])
    # Iteration 4: a chunk crossing the key-tile boundary (256) and decodes.
    c.step([3, 0, 2], past_len=[300, 58, 11], new_len=[40, 1, 1])


def test_attention_rejects_a_block_table_too_short_for_the_positions(rng) -> None:
    kv = np.zeros((4, 2, 1, 4, 8), np.float32)
    qkv = rng.standard_normal((3, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="needs 2 blocks"):
        K.attention(qkv, kv, np.array([2], np.int32), np.array([3], np.int32), np.array([[0]], np.int32),
                    dtype="float32", num_heads=1, num_kv_heads=1, head_dim=8)
    with pytest.raises(ValueError, match=r"block_table\[0, 1\] = 9"):
        K.attention(qkv, kv, np.array([2], np.int32), np.array([3], np.int32), np.array([[0, 9]], np.int32),
                    dtype="float32", num_heads=1, num_kv_heads=1, head_dim=8)
