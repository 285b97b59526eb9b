"""CUDA kernels of plugins/ (through _core.cuda_kernels) against the CPU reference kernels
(_core.kernels) on the same random inputs, never zeros. Outputs are poisoned with NaN before each
run, so an element a kernel never writes fails the comparison.

Tolerances (both sides compute in float32 and round once, in different orders):
  float32:          |gpu - cpu| <= 1e-5 |cpu| + atol
  bfloat16/float16: |gpu - cpu| <= 2 eps |cpu| + atol: each side's float32 error can move the
                    rounding across a boundary, one ulp each way.
  atol is stated per test, relative to the magnitude of the terms summed.
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
DTYPES = ["float32", "bfloat16", "float16"]
NP_DTYPE = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
RTOL = {"float32": 1e-5, "bfloat16": 2 * float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps),
        "float16": 2 * float(np.finfo(np.float16).eps)}


def rand(rng: np.random.Generator, shape, dtype: str, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    x = (rng.standard_normal(shape) * scale + shift).astype(np.float32)
    return x if dtype == "float32" else x.astype(NP_DTYPE[dtype]).view(np.uint16)


def values(a: np.ndarray, dtype: str) -> np.ndarray:
    return (a if dtype == "float32" else a.view(NP_DTYPE[dtype])).astype(np.float64)


def assert_close(gpu: np.ndarray, cpu: np.ndarray, dtype: str, atol: float = 0.0) -> None:
    g, c = values(gpu, dtype), values(cpu, dtype)
    assert g.shape == c.shape
    assert not np.isnan(g).any(), "an output element was never written (still NaN poison)"
    err, bound = np.abs(g - c), RTOL[dtype] * np.abs(c) + atol
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{dtype}: |gpu - cpu| = {err[worst]:.3g} > {bound[worst]:.3g} at {worst}"


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # the same inputs in every run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 7, 64, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_matches_cpu(rng, dtype, m, bias):
    n, k = 192, 256
    x, w = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype, 0.1)
    b = rand(rng, (n,), dtype) if bias else None
    cpu = K.gemm(x, w, b, dtype=dtype)
    gpu = C.gemm(x, w, b, dtype=dtype)
    assert_close(gpu, cpu, dtype, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_gemm_float32_logits_with_bias(rng, dtype):
    m, n, k = 5, 130, 64  # n not a multiple of 8: the logits of a padded vocab are not either
    x, w = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype, 0.1)
    b = rand(rng, (n,), dtype)
    cpu = K.gemm(x, w, b, dtype=dtype, out_dtype="float32")
    gpu = C.gemm(x, w, values(b, dtype).astype(np.float32), dtype=dtype, out_dtype="float32")
    assert_close(gpu, cpu, "float32", atol=1e-5 * np.sqrt(k))


def test_autotuned_algorithm_runs_and_matches(rng):
    n, k = 256, 512
    tuned = _core.cuda_autotune_gemm(n, k, "bfloat16", "bfloat16", False, [1, 32, 128], 8, 5)
    assert [t["m"] for t in tuned] == [1, 32, 128]
    assert all((t["algo"] == "gemv" or len(t["algo"]) == 128) and t["best_us"] <= t["default_us"] for t in tuned)
    x, w = rand(rng, (32, k), "bfloat16"), rand(rng, (n, k), "bfloat16", 0.1)
    cpu = K.gemm(x, w, None, dtype="bfloat16")
    for t in tuned:  # an algorithm tuned for one m, used at another (the runtime's bucket rule)
        assert_close(C.gemm(x, w, None, dtype="bfloat16", algo=t["algo"]), cpu, "bfloat16", atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("m", [1, 3, 4, 5])  # 5: past the GEMV's rows, cuBLASLt runs it
@pytest.mark.parametrize("out_dtype", [None, "float32"])
def test_gemv_tactic_matches_cpu(rng, dtype, m, out_dtype):
    n, k = 100, 2056  # k: a multiple of 8 that is not of the unrolled 1024-element step
    x, w = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype, 0.1)
    b = rand(rng, (n,), dtype)
    cpu = K.gemm(x, w, b, dtype=dtype, out_dtype=out_dtype)
    bias = values(b, dtype).astype(np.float32) if out_dtype == "float32" else b
    gpu = C.gemm(x, w, bias, dtype=dtype, out_dtype=out_dtype, algo="gemv")
    # m = 5 runs on cuBLASLt: its bias epilogue may round x.w to the output type before adding the
    # bias (seen on an H200: 4 bf16 ulps of a small output whose product and bias nearly cancel).
    # So its bound is 2 ulps of |x.w| + |bias| (the float64 product), not of the output alone.
    product = np.abs(values(x, dtype) @ values(w, dtype).T) + np.abs(values(b, dtype))
    atol = 1e-5 * np.sqrt(k) + (RTOL[out_dtype or dtype] * product if m > 4 else 0.0)
    assert_close(gpu, cpu, out_dtype or dtype, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [0, 16])
def test_rms_norm_matches_cpu(rng, dtype, chunk):
    x, w = rand(rng, (9, 96), dtype, 2.0, 0.5), rand(rng, (chunk or 96,), dtype, 1.0, 1.0)
    assert_close(C.rms_norm(x, w, dtype, chunk, 1e-6), K.rms_norm(x, w, dtype, chunk, 1e-6), dtype, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2048, 8200, 100])  # one vector per thread; over 1024 vectors; not whole vectors (16-bit)
def test_add_rms_norm_matches_cpu(rng, dtype, dim):
    a, b, w = rand(rng, (11, dim), dtype), rand(rng, (11, dim), dtype), rand(rng, (dim,), dtype, 1.0, 1.0)
    gn, gs = C.add_rms_norm(a, b, w, dtype, 1e-5)
    cn, cs = K.add_rms_norm(a, b, w, dtype, 1e-5)
    assert_close(gs, cs, dtype)
    assert_close(gn, cn, dtype, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [200, 8200])  # registers, one vector per thread; the strided kernel
def test_layer_norms_match_cpu(rng, dtype, dim):
    a, b = rand(rng, (6, dim), dtype, 1.0, 3.0), rand(rng, (6, dim), dtype)
    w, bias = rand(rng, (dim,), dtype, 1.0, 1.0), rand(rng, (dim,), dtype)
    atol = layer_norm_atol(values(a, dtype), values(w, dtype))
    assert_close(C.layer_norm(a, w, bias, dtype, 1e-5), K.layer_norm(a, w, bias, dtype, 1e-5), dtype, atol=atol)
    gn, gs = C.add_layer_norm(a, b, w, bias, dtype, 1e-5)
    cn, cs = K.add_layer_norm(a, b, w, bias, dtype, 1e-5)
    assert_close(gs, cs, dtype)
    assert_close(gn, cn, dtype, atol=layer_norm_atol(values(cs, dtype), values(w, dtype)))


def layer_norm_atol(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each side sums a row in float32, in its own order: their means can differ by about
    sqrt(dim) * 2^-24 * mean|x| (rounding errors of random sign; rows here have mean 3), which
    moves every output of the row by that times rsqrt(var) * |w|. Allowed: 4x that, plus 1e-5."""
    inv = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    mean_error = np.sqrt(x.shape[-1]) * 2.0**-24 * np.abs(x).mean(axis=-1, keepdims=True)
    return 1e-5 + 4 * mean_error * inv * np.abs(w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 64), (5, 13)])  # vector and scalar paths
def test_elementwise_match_cpu(rng, dtype, shape):
    a, b = rand(rng, shape, dtype, 2.0), rand(rng, shape, dtype, 2.0)
    assert_close(C.add(a, b, dtype), K.add(a, b, dtype), dtype)
    assert_close(C.gelu_tanh(a, dtype), K.gelu_tanh(a, dtype), dtype, atol=1e-6)
    bias = rand(rng, (shape[1],), dtype)
    assert_close(C.add_bias(a, bias, dtype), K.add_bias(a, bias, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [64, 12])
def test_silu_mul_matches_cpu(rng, dtype, inter):
    x = rand(rng, (7, 2 * inter), dtype, 3.0)
    assert_close(C.silu_mul(x, dtype), K.silu_mul(x, dtype), dtype, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_and_gather_rows_match_cpu(rng, dtype):
    table = rand(rng, (50, 24), dtype)
    ids = rng.integers(0, 50, 17).astype(np.int32)
    assert np.array_equal(C.embedding(ids, table, dtype), K.embedding(ids, table, dtype))
    x = rand(rng, (9, 33), dtype)  # 66-byte rows in 16-bit dtypes: not a multiple of 16 bytes
    rows = np.array([8, 0, 3, 3], dtype=np.int32)
    assert np.array_equal(C.gather_rows(x, rows), K.gather_rows(x, rows))


def attention_case(rng, dtype, *, h, h_kv, d, past, new, tokens_per_block=16, rope=True, qk_norm=False):
    """Random qkv, a random pre-filled cache and shuffled block tables for requests with these
    past / new lengths; returns (args, kwargs) for kernels.attention and cuda_kernels.attention."""
    past, new = np.array(past, np.int32), np.array(new, np.int32)
    blocks = [int(-(-(p + n) // tokens_per_block)) for p, n in zip(past, new)]
    num_blocks = sum(blocks) + 3
    ids = rng.permutation(num_blocks).astype(np.int32)
    table = np.zeros((len(past), max(blocks)), np.int32)
    at = 0
    for r, nb in enumerate(blocks):
        table[r, :nb] = ids[at:at + nb]
        at += nb
    kv = rand(rng, (num_blocks, 2, h_kv, tokens_per_block, d), dtype)
    qkv = rand(rng, (int(new.sum()), (h + 2 * h_kv) * d), dtype)
    kwargs = dict(dtype=dtype, num_heads=h, num_kv_heads=h_kv, head_dim=d)
    if rope:
        kwargs["inv_freq"] = K.rope_inv_freq(d, 10000.0)
    if qk_norm:
        kwargs.update(q_norm=rand(rng, (d,), dtype, 0.5, 1.0), k_norm=rand(rng, (d,), dtype, 0.5, 1.0),
                      qk_norm_eps=1e-6)
    return qkv, kv, past, new, table, kwargs


def check_attention(case, dtype, num_splits=0):
    qkv, kv, past, new, table, kwargs = case
    kv_cpu, kv_gpu = kv.copy(), kv.copy()
    cpu = K.attention(qkv, kv_cpu, past, new, table, **kwargs)
    gpu = C.attention(qkv, kv_gpu, past, new, table, **kwargs, num_splits=num_splits)
    # the cache: same k/v written through the block table (rope / norm rounding aside)
    assert_close(kv_gpu, kv_cpu, dtype, atol=1e-5)
    scale = np.abs(values(cpu, dtype)).max()
    assert_close(gpu, cpu, dtype, atol=(2e-5 if dtype == "float32" else 4e-3) * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [8, 16, 64, 128])
def test_attention_mixed_batch_matches_cpu(rng, dtype, d):
    # decode (new 1), prefill (past 0), chunked prefill (past > 0, new > 1), a long tile count
    case = attention_case(rng, dtype, h=8, h_kv=2, d=d, past=[37, 0, 20, 5, 0], new=[1, 70, 9, 1, 1])
    check_attention(case, dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("num_splits", [0, 1, 3, 7, 40])  # 0: the backend's choice; 1: 601 keys in 3 tiles
def test_attention_decode_splits_match_cpu(rng, dtype, num_splits):
    # long and short contexts, a split takes >= 32 keys. On Hopper the splits of a request form
    # clusters of up to 8 (3 splits: clusters of 4) that merge in split 0's shared memory when one
    # holds them all: 40 splits give 2101 keys 40 splits merged through global memory, 601 keys 8
    # cluster splits of 76 (at most 128), 256 keys 8 of 32; 4 and 1 keys take one split (written
    # without a merge). Uneven last splits; MHA and GQA group 8. A batch of decode tokens
    # only: the decode kernel writes the new k / v itself (checked in the cache).
    for h, h_kv in ((4, 4), (16, 2)):
        case = attention_case(rng, dtype, h=h, h_kv=h_kv, d=64, past=[600, 3, 255, 0, 2100], new=[1, 1, 1, 1, 1],
                              tokens_per_block=32)
        check_attention(case, dtype, num_splits)


@pytest.mark.parametrize("d", [8, 16, 128, 256])
@pytest.mark.parametrize("h, h_kv", [(64, 1), (56, 1), (8, 8)])  # GQA group 64 (the most a tile takes), 56; MHA
def test_attention_decode_only_prep_matches_cpu(rng, d, h, h_kv):
    # A batch of decode tokens only: the decode kernel norms and rotates q itself and writes the
    # new k / v (checked in the cache); 71 keys over 2 or 3 splits, 6 keys in one. Group 64: the
    # cluster's push buffer is too large at d 256 (a global merge) and takes clusters of 2 at d 128.
    # Group 56 at d 256: a cluster of 2's push buffer would fit its own bound but not beside the
    # block's shared memory (the GPU's 227 KB), so no cluster either.
    case = attention_case(rng, "bfloat16", h=h, h_kv=h_kv, d=d, past=[70, 5], new=[1, 1], qk_norm=True)
    check_attention(case, "bfloat16", 4)


def test_attention_decode_merges_many_splits_of_a_long_sequence(rng):
    # 20001 keys in 254 splits of 79: the merge's weights are spread over the lanes 8 times.
    case = attention_case(rng, "float32", h=2, h_kv=1, d=64, past=[20000], new=[1], tokens_per_block=64)
    check_attention(case, "float32", 256)


def test_attention_rejects_more_splits_than_the_merge_holds(rng):
    qkv, kv, past, new, table, kwargs = attention_case(rng, "float32", h=2, h_kv=1, d=64, past=[20000], new=[1],
                                                       tokens_per_block=64)
    with pytest.raises(ValueError, match="num_splits must be 1 to 256"):
        C.attention(qkv, kv, past, new, table, **kwargs, num_splits=257)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention_qk_norm_and_no_rope_match_cpu(rng, dtype):
    check_attention(attention_case(rng, dtype, h=4, h_kv=2, d=32, past=[3, 0], new=[1, 40], qk_norm=True), dtype)
    # decode only: q / k normed and rotated in the decode kernel, a 200-key request over 4 splits
    check_attention(attention_case(rng, dtype, h=4, h_kv=2, d=32, past=[3, 199], new=[1, 1], qk_norm=True), dtype, 8)
    check_attention(attention_case(rng, dtype, h=2, h_kv=1, d=32, past=[0, 8], new=[5, 2], rope=False), dtype)


# Tensor-core prefill (bf16/fp16, head_dim 64/128): q is rounded to the activation dtype for Q·Kᵀ
# and the probabilities for P·V (docs/cuda_backend.md), where the CPU keeps both in float32. Each
# rounding perturbs a softmax weight by <= 2^-9 (bf16) / 2^-11 (fp16) relative, so a row moves by
# at most that times max|v| (~4.5 here) and typically far less: atol = 1e-2 (bf16) / 3e-3 (fp16)
# of max|out| leaves ~5x headroom over the worst case; a wrong mask or fragment moves short rows
# by O(|v|).
TC_ATOL = {"bfloat16": 1e-2, "float16": 3e-3}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("h, h_kv, tokens_per_block", [(4, 4, 16), (8, 2, 32), (16, 2, 64), (8, 1, 128)])
def test_tensor_core_prefill_matches_cpu(rng, dtype, d, h, h_kv, tokens_per_block):
    # GQA 1 / 4 / 8; fresh prefills, chunked-prefill continuations (past > 0), a decode row and a
    # 2-token chunk in one batch; lengths off the 64-row and 64-key tiles
    case = attention_case(rng, dtype, h=h, h_kv=h_kv, d=d, past=[0, 37, 0, 300, 5, 9, 64],
                          new=[17, 100, 257, 1000, 2, 1, 1], tokens_per_block=tokens_per_block)
    qkv, kv, past, new, table, kwargs = case
    kv_cpu, kv_gpu = kv.copy(), kv.copy()
    cpu = K.attention(qkv, kv_cpu, past, new, table, **kwargs)
    gpu = C.attention(qkv, kv_gpu, past, new, table, **kwargs)
    assert_close(kv_gpu, kv_cpu, dtype, atol=1e-5)
    assert_close(gpu, cpu, dtype, atol=TC_ATOL[dtype] * np.abs(values(cpu, dtype)).max())


def test_tensor_core_prefill_first_rows_are_exact_means(rng):
    # Row 0 of a fresh prefill sees one key: its output is that key's v, bit for bit (p = 1).
    case = attention_case(rng, "bfloat16", h=8, h_kv=2, d=128, past=[0], new=[65], rope=False)
    qkv, kv, past, new, table, kwargs = case
    out = C.attention(qkv, kv.copy(), past, new, table, **kwargs)
    v0 = qkv[0, (8 + 2) * 128:].reshape(2, 128)
    assert np.array_equal(out[0].reshape(8, 128), np.repeat(v0, 4, axis=0))


def sample_rows(logits, vocab, uniform, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, want_logprob=False):
    rows = logits.shape[0]
    return C.sample_rows(logits, vocab, temperature=[temperature] * rows, top_k=[top_k] * rows, top_p=[top_p] * rows,
                         min_p=[min_p] * rows, uniform=list(uniform), want_logprob=want_logprob)


def test_greedy_rows_match_cpu_greedy(rng):
    vocab, padded = 1000, 1003
    logits = rng.standard_normal((6, padded)).astype(np.float32)
    logits[:, vocab:] = 100.0          # padding columns are never picked
    logits[1, [10, 500]] = 50.0        # a tie: the lower id wins
    logits[2, 3] = np.nan              # NaN never wins
    logits[3, :] = -np.inf             # nothing finite: -1
    logits[4, 999] = 60.0              # the last real column
    want = [int(np.argmax(np.where(np.isnan(r[:vocab]), -np.inf, r[:vocab]))) for r in logits]
    want[3] = -1
    tokens, _ = sample_rows(logits, vocab, [0.5] * 6, temperature=0.0)
    assert tokens.tolist() == want


def test_top_k_1_is_argmax(rng):
    logits = rng.standard_normal((8, 5000)).astype(np.float32)
    logits[0, [7, 4000]] = 9.0  # tie: the lower id
    tokens, _ = sample_rows(logits, 5000, rng.random(8), temperature=0.7, top_k=1)
    assert tokens.tolist() == [int(np.argmax(r)) for r in logits]


# (temperature, top_k, top_p, min_p): each filter alone, all together, and a top_p that keeps
# nearly all of top_k (its cutoff then sits next to tokens top_k dropped)
FILTERS = [(1.0, 0, 1.0, 0.0), (0.7, 40, 1.0, 0.0), (1.3, 0, 0.8, 0.0), (1.0, 0, 1.0, 0.05), (0.9, 200, 0.9, 0.02),
           (1.0, 5, 0.999, 0.0)]


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", FILTERS)
@pytest.mark.parametrize("vocab", [1000, 128256])
def test_samples_stay_in_the_cpu_kept_set(rng, vocab, temperature, top_k, top_p, min_p):
    from test_sampler import reference_probs

    logits = (rng.standard_normal(vocab) * 3.0).astype(np.float32)
    logits[rng.integers(0, vocab, 5)] = -np.inf  # banned-like tokens are never drawn
    allowed = reference_probs(logits, temperature, top_k, top_p, min_p) > 0
    uniform = np.concatenate([[0.0, 1.0 - 2.0**-53], rng.random(62)])
    tokens, _ = sample_rows(np.tile(logits, (64, 1)), vocab, uniform, temperature, top_k, top_p, min_p)
    assert np.all(tokens >= 0) and np.all(allowed[tokens]), f"drawn outside the kept set: {tokens[~allowed[tokens]]}"


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", FILTERS)
@pytest.mark.parametrize("vocab", [1000, 128256])
def test_the_same_uniform_draws_the_same_token_as_the_cpu_sampler(rng, vocab, temperature, top_k, top_p, min_p):
    # Both walk the kept tokens in id order: a seeded request does not depend on which sampler a
    # step ran on. (The device's 2^-40 fixed-point masses could move a boundary by ~2^-40 of the
    # mass: a uniform landing there is a ~1e-7 event.)
    logits = (rng.standard_normal(vocab) * 3.0).astype(np.float32)
    config = _core.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    seeds = range(64)
    uniform = [_core.Rng(seed).uniform() for seed in seeds]
    device, _ = sample_rows(np.tile(logits, (64, 1)), vocab, uniform, temperature, top_k, top_p, min_p)
    host = [_core.sample_token(logits, config, [], 0, [], _core.Rng(seed)).token for seed in seeds]
    assert device.tolist() == host


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", FILTERS)
def test_stratified_draws_match_the_kept_distribution(rng, temperature, top_k, top_p, min_p):
    # Inverse CDF: evenly spaced uniforms put round(N p) +- 1 draws on every kept token.
    from test_sampler import reference_probs

    vocab, n = 300, 4000
    logits = (rng.standard_normal(vocab) * 2.0).astype(np.float32)
    probs = reference_probs(logits, temperature, top_k, top_p, min_p)
    tokens, _ = sample_rows(np.tile(logits, (n, 1)), vocab, (np.arange(n) + 0.5) / n, temperature, top_k, top_p,
                            min_p)
    counts = np.bincount(tokens, minlength=vocab)
    assert np.abs(counts - n * probs).max() <= 1.01


def test_temperature_frequencies_match_softmax(rng):
    from test_sampler import chi2_pvalue

    vocab, n, temperature = 64, 20000, 0.8
    logits = rng.standard_normal(vocab).astype(np.float32)
    tokens, _ = sample_rows(np.tile(logits, (n, 1)), vocab, rng.random(n), temperature)
    x = logits.astype(np.float64) / np.float64(np.float32(temperature))
    probs = np.exp(x - x.max())
    assert chi2_pvalue(np.bincount(tokens, minlength=vocab), probs / probs.sum()) > 1e-4


def test_same_uniforms_give_same_tokens(rng):
    logits = (rng.standard_normal((32, 32000)) * 2.0).astype(np.float32)
    uniform = rng.random(32)
    first, _ = sample_rows(logits, 32000, uniform, 1.0, 50, 0.95)
    second, _ = sample_rows(logits, 32000, uniform, 1.0, 50, 0.95)
    assert first.tolist() == second.tolist()


def test_logprob_is_log_softmax_of_raw_logits(rng):
    logits = (rng.standard_normal((4, 3000)) * 2.0).astype(np.float32)
    tokens, logprobs = sample_rows(logits, 3000, rng.random(4), 0.5, 10, want_logprob=True)
    x = logits.astype(np.float64)
    log_z = x.max(axis=1) + np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1))
    np.testing.assert_allclose(logprobs, x[np.arange(4), tokens] - log_z, rtol=1e-6, atol=1e-6)


def test_sampling_error_codes(rng):
    logits = rng.standard_normal((3, 100)).astype(np.float32)
    logits[0, 5] = np.inf     # +inf with temperature > 0: the CPU sampler throws
    logits[1, :] = -np.inf    # nothing drawable
    logits[2, :] = np.nan
    tokens, _ = sample_rows(logits, 100, [0.3] * 3, 1.0)
    assert tokens.tolist() == [-2, -1, -1]


@pytest.mark.parametrize("dtype, shard_cols", [(np.float32, 64), (np.float32, 6), (np.float32, 5), (np.uint16, 7),
                                               (np.uint8, 9)])  # 16-, 8-, 4-, 2- and 1-byte moves
@pytest.mark.parametrize("tp", [2, 3])
def test_concat_shards_matches_cpu(rng, dtype, shard_cols, tp):
    gathered = rng.integers(0, 250, (tp, 5, shard_cols)).astype(dtype)
    want = np.concatenate(list(gathered), axis=1)  # [rows, tp * shard_cols], rank r's columns r-th
    np.testing.assert_array_equal(C.concat_shards(gathered), want)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_float32_staging_of_16bit_all_reduce_is_exact_then_rounds_to_nearest_even(rng, dtype):
    x = rand(rng, (3, 1000), dtype, scale=5.0)
    np.testing.assert_array_equal(C.widen_to_float(x, dtype), values(x, dtype).astype(np.float32))
    f = (rng.standard_normal((3, 1000)) * 5).astype(np.float32)
    f[0, :4] = [1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8), 65504.0 * 4]  # bf16 ties to even; fp16 overflow
    with np.errstate(over="ignore"):
        want = f.astype(NP_DTYPE[dtype]).view(np.uint16)  # numpy and ml_dtypes round to nearest even
    np.testing.assert_array_equal(C.narrow_from_float(f, dtype), want)
