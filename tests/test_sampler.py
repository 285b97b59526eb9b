"""CPU sampler (cpp/src/sampler.cpp) against independent numpy references.

The reference follows the published formulas: HF transformers' RepetitionPenaltyLogitsProcessor,
TopKLogitsWarper, TopPLogitsWarper and MinPLogitsWarper, and OpenAI's presence/frequency
penalties. Draws are checked two ways: exactly, by replaying the sampler's one uniform per token
through a numpy inverse CDF, and statistically, by a chi-square test of many draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from trtllm_runtime import _core

SamplingConfig = _core.SamplingConfig
Rng = _core.Rng


def sample(logits: Sequence[float], rng: int | _core.Rng = 0, tokens: Sequence[int] = (),
           num_prompt: int = 0, banned: Sequence[int] = (), **config: float) -> _core.SampledToken:
    return _core.sample_token(np.asarray(logits, dtype=np.float32), SamplingConfig(**config),
                              list(tokens), num_prompt, list(banned), rng)


def penalized(logits: np.ndarray, tokens: Sequence[int] = (), num_prompt: int = 0,
              banned: Sequence[int] = (), repetition_penalty: float = 1.0,
              presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> np.ndarray:
    """HF repetition penalty over all tokens, then OpenAI penalties over generated ones, in float32."""
    out = np.asarray(logits, dtype=np.float32).copy()
    p = np.float32(repetition_penalty)
    for t in set(tokens):
        out[t] = out[t] / p if out[t] > 0 else out[t] * p
    ids, counts = np.unique(np.asarray(tokens[num_prompt:], dtype=np.int64), return_counts=True)
    for t, c in zip(ids, counts):
        out[t] = out[t] - np.float32(frequency_penalty) * np.float32(c)
        out[t] = out[t] - np.float32(presence_penalty)
    out[list(banned)] = -np.inf
    return out


def descending_order(logits: np.ndarray) -> np.ndarray:
    """Token ids by descending logit, ties by ascending id."""
    return np.lexsort((np.arange(logits.size), -logits.astype(np.float64)))


def reference_probs(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0,
                    min_p: float = 0.0) -> np.ndarray:
    """Renormalized float64 distribution after temperature, top_k, top_p and min_p."""
    x = logits.astype(np.float64)
    probs = np.exp((x - x.max()) / np.float64(np.float32(temperature)))
    probs /= probs.sum()
    order = descending_order(logits)
    if 0 < top_k < logits.size:
        probs[order[top_k:]] = 0.0
        probs /= probs.sum()
    if top_p < 1.0:
        # HF: sort ascending, drop tokens whose cumulative mass is <= 1 - top_p, keep the best.
        ascending = order[::-1]
        cumulative = np.cumsum(probs[ascending])
        drop = cumulative <= 1.0 - np.float64(np.float32(top_p))
        drop[-1] = False
        probs[ascending[drop]] = 0.0
        probs /= probs.sum()
    if min_p > 0.0:
        probs[probs < np.float64(np.float32(min_p)) * probs.max()] = 0.0
        probs /= probs.sum()
    return probs


def inverse_cdf(probs: np.ndarray, u: float) -> int:
    """The token whose slice of [0, 1), laid out in token id order (as the GPU sampler walks), holds u."""
    ids = np.flatnonzero(probs > 0)
    cdf = np.cumsum(probs[ids])
    return int(ids[min(np.searchsorted(cdf, u * cdf[-1], side="right"), ids.size - 1)])


def chi2_pvalue(observed: np.ndarray, expected_probs: np.ndarray) -> float:
    """Upper-tail p-value of Pearson's chi-square (Wilson-Hilferty approximation)."""
    mask = expected_probs > 0
    expected = expected_probs[mask] * observed.sum()
    stat = float(((observed[mask] - expected) ** 2 / expected).sum())
    dof = int(mask.sum()) - 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def draw_counts(logits: np.ndarray, num_draws: int, seed: int = 1234, **config: float) -> np.ndarray:
    rng = Rng(seed)
    cfg = SamplingConfig(**config)
    row = logits.astype(np.float32)
    counts = np.zeros(row.size, dtype=np.int64)
    for _ in range(num_draws):
        counts[_core.sample_token(row, cfg, [], 0, [], rng).token] += 1
    return counts


def logits_of(probs: Sequence[float]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


# --- greedy and penalties ---------------------------------------------------------------------


def test_greedy_is_argmax():
    gen = np.random.default_rng(0)
    for _ in range(20):
        row = gen.standard_normal(1000).astype(np.float32)
        assert sample(row).token == int(np.argmax(row))


def test_greedy_ties_go_to_lowest_id():
    assert sample([0.0, 3.0, 1.0, 3.0, 3.0]).token == 1


def test_greedy_takes_nothing_from_the_rng():
    rng, fresh = Rng(5), Rng(5)
    sample([0.0, 1.0, 2.0], rng=rng)
    assert rng.next() == fresh.next()


@pytest.mark.parametrize(("penalty", "expected"), [(1.2, 0), (1.5, 1)])
def test_repetition_penalty_divides_positive_logits(penalty, expected):
    # 2.0 / 1.2 = 1.67 > 1.6 keeps token 0; 2.0 / 1.5 = 1.33 < 1.6 does not.
    assert sample([2.0, 1.6, -5.0], tokens=[0], num_prompt=1,
                  repetition_penalty=penalty).token == expected


@pytest.mark.parametrize(("penalty", "expected"), [(1.3, 0), (1.5, 1)])
def test_repetition_penalty_multiplies_negative_logits(penalty, expected):
    # -1.0 * 1.3 = -1.3 > -1.4 keeps token 0; -1.0 * 1.5 = -1.5 < -1.4 does not.
    assert sample([-1.0, -1.4, -9.0], tokens=[0], num_prompt=1,
                  repetition_penalty=penalty).token == expected


def test_repetition_penalty_applies_once_per_distinct_token():
    # Once: 4 / 2 = 2 > 1.9. Three times would give 0.5.
    assert sample([4.0, 1.9], tokens=[0, 0, 0], num_prompt=1, repetition_penalty=2.0).token == 0
    assert sample([4.0, 2.1], tokens=[0, 0, 0], num_prompt=1, repetition_penalty=2.0).token == 1


def test_repetition_penalty_covers_prompt_and_generated_tokens():
    logits = [3.0, 3.0, 2.0]
    # Token 0 only in the prompt, token 1 only generated: both lose to token 2 at penalty 2.
    assert sample(logits, tokens=[0, 1], num_prompt=1, repetition_penalty=2.0).token == 2


@pytest.mark.parametrize(("rival", "expected"), [(1.55, 0), (1.65, 1)])
def test_frequency_and_presence_penalties_follow_openai_formula(rival, expected):
    # Token 0 generated twice: 3.0 - 2 * 0.5 - 0.4 = 1.6.
    assert sample([3.0, rival], tokens=[0, 0], num_prompt=0, frequency_penalty=0.5,
                  presence_penalty=0.4).token == expected


def test_presence_and_frequency_penalties_ignore_prompt_tokens():
    assert sample([3.0, 2.0], tokens=[0, 0, 0], num_prompt=3, frequency_penalty=2.0,
                  presence_penalty=2.0).token == 0


def test_negative_presence_penalty_encourages_generated_tokens():
    assert sample([1.0, 1.5], tokens=[0], num_prompt=0, presence_penalty=-1.0).token == 0


def test_banned_tokens_are_never_sampled():
    logits = np.array([5.0, 4.0, 0.0, 0.0], dtype=np.float32)
    assert sample(logits, banned=[0, 1]).token == 2
    rng = Rng(3)
    for _ in range(500):
        assert sample(logits, rng=rng, banned=[0, 3], temperature=2.0).token in (1, 2)


def test_banned_ids_outside_the_vocabulary_are_ignored():
    assert sample([1.0, 2.0], banned=[-1, 7]).token == 1


def test_all_tokens_banned_raises():
    with pytest.raises(ValueError, match="no token can be drawn"):
        sample([1.0, 2.0], banned=[0, 1], temperature=1.0)


def test_history_token_outside_vocabulary_raises():
    with pytest.raises(IndexError, match="token id 9 at position 1"):
        sample([1.0, 2.0], tokens=[0, 9], num_prompt=1, repetition_penalty=1.1)


# --- exact draws -------------------------------------------------------------------------------

EXACT_CONFIGS = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=40),
    dict(temperature=1.3, top_p=0.9),
    dict(temperature=1.0, min_p=0.05),
    dict(temperature=0.8, top_k=200, top_p=0.95, min_p=0.01, repetition_penalty=1.3,
         presence_penalty=0.5, frequency_penalty=0.3),
]


@pytest.mark.parametrize("config", EXACT_CONFIGS, ids=lambda c: ",".join(c))
def test_draw_is_inverse_cdf_of_one_uniform_in_token_id_order(config):
    gen = np.random.default_rng(7)
    raw = (gen.standard_normal(2000) * 3).astype(np.float32)
    tokens = [int(t) for t in gen.integers(0, 2000, size=60)]
    num_prompt = 40
    penalties = {k: config[k] for k in config
                 if k in ("repetition_penalty", "presence_penalty", "frequency_penalty")}
    warpers = {k: v for k, v in config.items() if k not in penalties}
    logits = penalized(raw, tokens, num_prompt, **penalties)
    probs = reference_probs(logits, **warpers)
    for seed in range(200):
        got = sample(raw, rng=seed, tokens=tokens, num_prompt=num_prompt, **config).token
        assert got == inverse_cdf(probs, Rng(seed).uniform()), seed


@pytest.mark.parametrize("config", [dict(temperature=1.0), dict(temperature=1.0, top_p=0.999)])
def test_draw_over_a_large_vocabulary_matches_inverse_cdf(config):
    # top_p near 1 keeps most of the vocabulary: the sorted prefix grows deep, then goes back to id order.
    gen = np.random.default_rng(11)
    logits = (gen.standard_normal(128_000) * 2).astype(np.float32)
    probs = reference_probs(logits, **config)
    rng, replay = Rng(99), Rng(99)
    for _ in range(100):
        assert sample(logits, rng=rng, **config).token == inverse_cdf(probs, replay.uniform())


# --- filters and temperature, statistically ---------------------------------------------------

NUM_DRAWS = 20_000


def test_top_k_one_equals_greedy():
    gen = np.random.default_rng(2)
    for seed in range(50):
        row = gen.standard_normal(500).astype(np.float32)
        assert sample(row, rng=seed, temperature=0.7, top_k=1).token == int(np.argmax(row))
    assert sample([1.0, 3.0, 3.0], rng=1, temperature=5.0, top_k=1).token == 1


def test_top_k_keeps_the_k_most_likely_tokens_with_renormalized_frequencies():
    logits = logits_of([0.05, 0.3, 0.1, 0.25, 0.2, 0.1])
    counts = draw_counts(logits, NUM_DRAWS, temperature=1.0, top_k=3)
    expected = reference_probs(logits, temperature=1.0, top_k=3)
    assert set(np.flatnonzero(counts)) == {1, 3, 4}
    assert chi2_pvalue(counts, expected) > 1e-3


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    # Mass before token 3 is 0.7 < 0.75: kept; before token 0 it is 0.9: dropped.
    logits = logits_of([0.1, 0.4, 0.3, 0.2])
    counts = draw_counts(logits, NUM_DRAWS, temperature=1.0, top_p=0.75)
    expected = reference_probs(logits, temperature=1.0, top_p=0.75)
    assert set(np.flatnonzero(expected)) == {1, 2, 3}
    assert set(np.flatnonzero(counts)) == {1, 2, 3}
    assert chi2_pvalue(counts, expected) > 1e-3


def test_top_p_always_keeps_the_most_likely_token():
    counts = draw_counts(logits_of([0.2, 0.5, 0.3]), 200, temperature=1.0, top_p=0.01)
    assert set(np.flatnonzero(counts)) == {1}


def test_min_p_drops_tokens_below_min_p_times_the_max():
    # Threshold 0.25 * 0.5 = 0.125 keeps 0.5, 0.2 and 0.15.
    logits = logits_of([0.05, 0.5, 0.1, 0.2, 0.15])
    counts = draw_counts(logits, NUM_DRAWS, temperature=1.0, min_p=0.25)
    expected = reference_probs(logits, temperature=1.0, min_p=0.25)
    assert set(np.flatnonzero(counts)) == {1, 3, 4}
    assert chi2_pvalue(counts, expected) > 1e-3


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_scales_frequencies_like_softmax_of_logits_over_temperature(temperature):
    logits = np.array([1.0, 0.0, -0.5, 0.5, -1.0, 0.2], dtype=np.float32)
    counts = draw_counts(logits, NUM_DRAWS, temperature=temperature)
    expected = np.exp(logits.astype(np.float64) / temperature)
    expected /= expected.sum()
    assert chi2_pvalue(counts, expected) > 1e-3


def test_combined_filters_sample_only_the_intersection():
    # top_k=4 keeps 0.3, 0.25, 0.2, 0.1 (renormalized /0.85); top_p=0.8 then keeps 3 of them;
    # min_p=0.7 then keeps 0.3 and 0.25.
    logits = logits_of([0.05, 0.3, 0.1, 0.25, 0.2, 0.05, 0.05])
    config = dict(temperature=1.0, top_k=4, top_p=0.8, min_p=0.7)
    counts = draw_counts(logits, NUM_DRAWS, **config)
    expected = reference_probs(logits, **config)
    assert set(np.flatnonzero(expected)) == {1, 3}
    assert set(np.flatnonzero(counts)) == {1, 3}
    assert chi2_pvalue(counts, expected) > 1e-3


# --- seeds ---------------------------------------------------------------------------------------


def token_stream(seed: int, length: int = 50) -> list[int]:
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    rng = Rng(seed)
    return [sample(logits, rng=rng, temperature=1.0, top_p=0.95).token for _ in range(length)]


def test_same_seed_gives_the_same_sequence():
    assert token_stream(7) == token_stream(7)


def test_different_seeds_give_different_sequences():
    assert token_stream(7) != token_stream(8)


def test_rng_is_std_mt19937_64():
    rng = Rng(5489)  # the default seed; C++ [rand.predef] fixes its 10000th output
    for _ in range(9999):
        rng.next()
    assert rng.next() == 9981545732273789042


def test_uniform_is_the_top_53_bits_of_one_output():
    a, b = Rng(42), Rng(42)
    for _ in range(100):
        assert a.uniform() == (b.next() >> 11) * 2.0**-53


# --- logprobs ------------------------------------------------------------------------------------


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_logprobs_are_log_softmax_of_the_raw_logits():
    gen = np.random.default_rng(4)
    raw = (gen.standard_normal(5000) * 2).astype(np.float32)
    expected = log_softmax(raw)
    for seed in range(20):
        out = sample(raw, rng=seed, tokens=[1, 2, 3], num_prompt=2, temperature=0.5, top_k=50,
                     repetition_penalty=1.5, frequency_penalty=1.0, num_logprobs=5)
        assert out.logprob == pytest.approx(expected[out.token], rel=1e-6, abs=1e-6)


def test_top_logprobs_are_the_best_raw_tokens_in_order_with_ties_by_id():
    raw = np.array([0.5, 2.0, -1.0, 2.0, 1.0, 3.0, 0.0], dtype=np.float32)
    out = sample(raw, banned=[5], num_logprobs=4)
    assert out.token == 1
    expected = log_softmax(raw)
    assert [t for t, _ in out.top_logprobs] == [5, 1, 3, 4]
    np.testing.assert_allclose([lp for _, lp in out.top_logprobs], expected[[5, 1, 3, 4]],
                               rtol=1e-6)


def test_num_logprobs_zero_gives_only_the_sampled_token():
    out = sample([1.0, 2.0], num_logprobs=0)
    assert out.top_logprobs == []
    assert out.logprob == pytest.approx(log_softmax(np.array([1.0, 2.0]))[1])


def test_no_logprobs_by_default():
    assert sample([1.0, 2.0]).top_logprobs == []


# --- validation ------------------------------------------------------------------------------------


def test_default_config_is_valid_greedy():
    config = SamplingConfig()
    assert _core.validate_sampling(config) == ""
    assert config.temperature == 0.0 and not config.has_seed


def test_seed_keyword_sets_has_seed():
    config = SamplingConfig(seed=2**64 - 1)
    assert config.has_seed and config.seed == 2**64 - 1


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("temperature", -0.5, "[0, inf)"),
    ("temperature", float("nan"), "[0, inf)"),
    ("top_k", -1, "[0, inf)"),
    ("top_p", 0.0, "(0, 1]"),
    ("top_p", 1.5, "(0, 1]"),
    ("min_p", 1.0, "[0, 1)"),
    ("min_p", -0.1, "[0, 1)"),
    ("repetition_penalty", 0.0, "(0, inf)"),
    ("presence_penalty", 2.5, "[-2, 2]"),
    ("frequency_penalty", -3.0, "[-2, 2]"),
    ("num_logprobs", 21, "[-1, 20]"),
    ("num_logprobs", -2, "[-1, 20]"),
])
def test_validation_names_field_value_and_range(field, value, allowed):
    message = _core.validate_sampling(SamplingConfig(**{field: value}))
    assert message.startswith(field + " ")
    assert allowed in message
    assert message.endswith(f"got {value:g}")
    with pytest.raises(ValueError, match=field):
        sample([0.0, 1.0], **{field: value})


@pytest.mark.parametrize(("field", "value"), [
    ("top_p", 1.0), ("min_p", 0.0), ("presence_penalty", -2.0), ("frequency_penalty", 2.0),
    ("num_logprobs", 20), ("num_logprobs", -1), ("top_k", 0),
])
def test_validation_accepts_range_ends(field, value):
    assert _core.validate_sampling(SamplingConfig(**{field: value})) == ""
