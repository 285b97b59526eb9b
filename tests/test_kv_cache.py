"""KV cache manager (cpp/src/kv_cache.cpp): blocks, block tables, prefix reuse, LRU eviction.

Block ids are handed out from 0 upwards while the free list lasts, which the tests rely on only
where they say so.
"""

from __future__ import annotations

import random

import pytest

from trtllm_runtime import _core

TPB = 4  # tokens per block in these tests


def make_kv(num_blocks: int = 16, tokens_per_block: int = TPB, reuse: bool = True) -> _core.KVCacheManager:
    config = _core.KVCacheConfig(
        tokens_per_block=tokens_per_block, num_blocks=num_blocks, enable_prefix_reuse=reuse
    )
    return _core.KVCacheManager(config)


def prefill(kv: _core.KVCacheManager, seq_id: int, tokens: list[int]) -> int:
    """Start a sequence and compute its whole prompt, as the executor would; returns tokens reused."""
    reused = kv.add_sequence(seq_id, tokens)
    assert kv.reserve(seq_id, len(tokens))
    kv.commit(seq_id, tokens, len(tokens))
    return reused


def check_accounting(kv: _core.KVCacheManager) -> None:
    s = kv.stats()
    assert s.free_blocks + s.used_blocks == s.num_blocks
    assert 0 <= s.cached_blocks <= s.free_blocks
    assert s.free_blocks == kv.num_available_blocks


# --- allocation -------------------------------------------------------------------------------


def test_reserve_allocates_whole_blocks_for_the_tokens() -> None:
    kv = make_kv(num_blocks=8)
    assert kv.add_sequence(1, list(range(10))) == 0
    assert kv.block_table(1) == []
    assert kv.blocks_needed(1, 10) == 3
    assert kv.reserve(1, 10)
    assert kv.block_table(1) == [0, 1, 2]
    assert kv.blocks_needed(1, 12) == 0 and kv.reserve(1, 12)  # still fits the third block
    assert kv.reserve(1, 13)
    assert len(kv.block_table(1)) == 4
    assert [kv.ref_count(b) for b in kv.block_table(1)] == [1, 1, 1, 1]


def test_reserve_is_all_or_nothing() -> None:
    kv = make_kv(num_blocks=4)
    kv.add_sequence(1, [1])
    kv.add_sequence(2, [2])
    assert kv.reserve(1, 3 * TPB)
    assert not kv.reserve(2, 2 * TPB)  # needs 2 blocks, 1 left
    assert kv.block_table(2) == []
    assert kv.num_available_blocks == 1
    assert kv.reserve(2, TPB)
    assert kv.num_available_blocks == 0


def test_freeing_returns_blocks_to_the_pool() -> None:
    kv = make_kv(num_blocks=4)
    kv.add_sequence(1, list(range(8)))
    assert kv.reserve(1, 16)
    assert kv.num_available_blocks == 0
    kv.free_sequence(1)
    assert not kv.has_sequence(1)
    assert kv.num_available_blocks == 4
    s = kv.stats()
    assert (s.used_blocks, s.cached_blocks) == (0, 0)  # nothing was committed: nothing cached
    kv.add_sequence(2, [0])
    assert kv.reserve(2, 16)


# --- prefix reuse -----------------------------------------------------------------------------


def test_shared_prompt_prefix_reuses_the_same_blocks_with_shared_ref_counts() -> None:
    kv = make_kv()
    system = list(range(100, 108))  # two full blocks
    a = system + [1, 2, 3, 4, 5]
    b = system + [9, 9, 9, 9, 9]
    assert prefill(kv, 1, a) == 0
    assert kv.add_sequence(2, b) == 8
    assert kv.block_table(2) == kv.block_table(1)[:2]
    assert [kv.ref_count(x) for x in kv.block_table(1)] == [2, 2, 1, 1]
    assert kv.stats().reused_tokens == 8
    # The reusing sequence writes only positions >= 8, which lie in blocks of its own.
    assert kv.reserve(2, len(b))
    own = kv.block_table(2)[2:]
    assert len(own) == 2 and not set(own) & set(kv.block_table(1))
    assert all(kv.ref_count(x) == 1 for x in own)


def test_cached_blocks_outlive_their_sequence_and_are_reused_after_it_is_freed() -> None:
    kv = make_kv(num_blocks=8)
    a = list(range(12))  # three full blocks
    prefill(kv, 1, a)
    table = kv.block_table(1)
    kv.free_sequence(1)
    s = kv.stats()
    assert (s.used_blocks, s.cached_blocks, s.free_blocks) == (0, 3, 8)
    assert kv.add_sequence(2, a + [99]) == 12
    assert kv.block_table(2) == table
    s = kv.stats()
    assert (s.used_blocks, s.cached_blocks, s.free_blocks) == (3, 0, 5)


def test_partially_filled_block_is_never_reused() -> None:
    kv = make_kv()
    a = list(range(10))  # two full blocks and a half-full third
    prefill(kv, 1, a)
    assert kv.add_sequence(2, a + [50, 51, 52]) == 8


def test_last_token_is_never_reused_even_when_its_block_is_cached() -> None:
    kv = make_kv()
    a = list(range(8))
    prefill(kv, 1, a)
    # The same 8 tokens: the last must be computed for its logits, so only the first block is reused.
    assert kv.add_sequence(2, a) == 4
    assert kv.num_reusable_tokens(a) == 4
    assert kv.num_reusable_tokens(a + [8]) == 8


def test_only_committed_blocks_are_reusable() -> None:
    kv = make_kv()
    a = list(range(16))
    kv.add_sequence(1, a)
    assert kv.reserve(1, len(a))
    assert kv.num_reusable_tokens(a) == 0  # reserved, not computed yet
    kv.commit(1, a, 6)  # a chunk of 6: one full block computed
    assert kv.num_reusable_tokens(a) == 4
    kv.commit(1, a, 16)
    assert kv.num_reusable_tokens(a) == 12


def test_reuse_disabled_hashes_nothing() -> None:
    kv = make_kv(num_blocks=8, reuse=False)
    a = list(range(12))
    assert prefill(kv, 1, a) == 0
    kv.free_sequence(1)
    s = kv.stats()
    assert (s.cached_blocks, s.free_blocks) == (0, 8)
    assert kv.num_reusable_tokens(a + [1]) == 0
    assert kv.add_sequence(2, a + [1]) == 0
    assert kv.stats().reused_tokens == 0


def test_hash_chain_covers_the_whole_prefix_not_just_the_block() -> None:
    kv = make_kv()
    shared_tail = [7, 7, 7, 7]
    prefill(kv, 1, [1, 2, 3, 4] + shared_tail + [0])
    # Same second block behind a different first block: its KV differs, nothing may match.
    assert kv.add_sequence(2, [5, 6, 7, 8] + shared_tail + [0]) == 0
    # Same first block, different second: only the first matches.
    assert kv.add_sequence(3, [1, 2, 3, 4] + [7, 7, 7, 8] + [0]) == 4


def test_a_block_computed_twice_concurrently_is_cached_once() -> None:
    kv = make_kv(num_blocks=8)
    a = list(range(9))
    # Both admitted before either computed anything: no reuse, two copies of the KV.
    assert kv.add_sequence(1, a) == 0 and kv.add_sequence(2, a) == 0
    for seq in (1, 2):
        assert kv.reserve(seq, len(a))
        kv.commit(seq, a, len(a))
    first = kv.block_table(1)[:2]
    kv.free_sequence(1)
    kv.free_sequence(2)
    assert kv.stats().cached_blocks == 2  # the second copy returned to the free list
    assert kv.add_sequence(3, a) == 8
    assert kv.block_table(3) == first


def test_reuse_matches_an_independent_longest_cached_prefix_model() -> None:
    """Random prompts drawn from a few shared stems; a pool large enough that nothing is evicted.

    Model: a sequence reuses the longest whole-block prefix that some earlier sequence computed,
    capped to leave its last token.
    """
    rng = random.Random(0)
    stems = [[rng.randrange(20) for _ in range(rng.randrange(0, 14))] for _ in range(4)]
    kv = make_kv(num_blocks=4096)
    computed_prefixes: set[tuple[int, ...]] = set()
    expected_total = 0
    for seq in range(200):
        tokens = rng.choice(stems) + [rng.randrange(3) for _ in range(rng.randrange(1, 10))]
        k = (len(tokens) - 1) // TPB
        while k and tuple(tokens[: k * TPB]) not in computed_prefixes:
            k -= 1
        expected_total += k * TPB
        assert prefill(kv, seq, tokens) == k * TPB, (seq, tokens)
        for j in range(1, len(tokens) // TPB + 1):
            computed_prefixes.add(tuple(tokens[: j * TPB]))
        if rng.random() < 0.7:
            kv.free_sequence(seq)
        check_accounting(kv)
    assert kv.stats().reused_tokens == expected_total
    assert kv.stats().evictions == 0


# --- eviction ---------------------------------------------------------------------------------


def test_free_blocks_are_used_before_any_cached_block_is_evicted() -> None:
    kv = make_kv(num_blocks=4)
    prefill(kv, 1, list(range(8)))  # blocks 0, 1
    kv.free_sequence(1)
    kv.add_sequence(2, [50])
    assert kv.reserve(2, 2 * TPB)
    assert kv.block_table(2) == [2, 3]
    assert kv.stats().evictions == 0
    assert kv.num_reusable_tokens(list(range(9))) == 8


def test_eviction_takes_the_least_recently_used_cached_block_first() -> None:
    kv = make_kv(num_blocks=4)
    a, b = [1, 2, 3, 4, 5, 6, 7, 8], [11, 12, 13, 14, 15, 16, 17, 18]
    prefill(kv, 1, a)  # blocks 0, 1
    prefill(kv, 2, b)  # blocks 2, 3
    kv.free_sequence(1)
    kv.free_sequence(2)
    # Touch a's blocks again: b's become the least recently used.
    assert kv.add_sequence(3, a + [0]) == 8
    kv.free_sequence(3)
    kv.add_sequence(4, [99])
    assert kv.reserve(4, TPB)
    assert kv.block_table(4) == [3]  # b's tail first: a chain is evicted from its end
    assert kv.reserve(4, 2 * TPB)
    assert kv.block_table(4) == [3, 2]
    assert kv.stats().evictions == 2
    assert kv.num_reusable_tokens(a + [0]) == 8
    assert kv.num_reusable_tokens(b + [0]) == 0


def test_referenced_blocks_are_never_evicted() -> None:
    kv = make_kv(num_blocks=3)
    prefill(kv, 1, list(range(8)))  # blocks 0, 1 stay referenced by sequence 1
    kv.add_sequence(2, [99])
    assert kv.reserve(2, TPB)
    assert not kv.reserve(2, 2 * TPB)
    assert kv.stats().evictions == 0


def test_blocks_needed_to_add_counts_matched_cached_blocks_leaving_the_pool() -> None:
    kv = make_kv(num_blocks=4)
    a = list(range(9))
    prefill(kv, 1, a)  # 3 blocks, two of them full
    kv.free_sequence(1)
    # Reusing the 2 cached blocks takes them out of the pool, plus 1 new block for token 8.
    assert kv.blocks_needed_to_add(a, len(a)) == 3
    assert kv.blocks_needed_to_add([42] * 9, 9) == 3
    assert kv.blocks_needed_to_add(a, 20) == 5  # more than the pool: would not fit
    assert kv.stats().cached_blocks == 2  # a dry run changes nothing


# --- stats and errors -------------------------------------------------------------------------


def test_stats_track_used_cached_free_reused_and_evicted_blocks() -> None:
    kv = make_kv(num_blocks=6)
    prefill(kv, 1, list(range(10)))  # 3 blocks: 2 full (hashed), 1 partial
    s = kv.stats()
    assert (s.num_blocks, s.used_blocks, s.free_blocks, s.cached_blocks) == (6, 3, 3, 0)
    kv.free_sequence(1)
    s = kv.stats()
    assert (s.used_blocks, s.free_blocks, s.cached_blocks) == (0, 6, 2)
    assert prefill(kv, 2, list(range(8)) + [77]) == 8  # the 2 cached blocks plus 1 new
    s = kv.stats()
    assert (s.used_blocks, s.free_blocks, s.cached_blocks) == (3, 3, 0)
    assert (s.reused_tokens, s.evictions) == (8, 0)
    check_accounting(kv)


def test_eviction_is_counted() -> None:
    kv = make_kv(num_blocks=2)
    prefill(kv, 1, list(range(8)))
    kv.free_sequence(1)
    kv.add_sequence(2, [1])
    assert kv.reserve(2, 2 * TPB)
    assert kv.stats().evictions == 2
    assert kv.stats().cached_blocks == 0


def test_unknown_sequence_id_is_a_value_error() -> None:
    kv = make_kv()
    for call in (
        lambda: kv.reserve(7, 1),
        lambda: kv.block_table(7),
        lambda: kv.free_sequence(7),
        lambda: kv.commit(7, [1], 1),
        lambda: kv.blocks_needed(7, 1),
    ):
        with pytest.raises(ValueError, match="unknown sequence id 7"):
            call()


def test_adding_a_sequence_twice_is_a_value_error() -> None:
    kv = make_kv()
    kv.add_sequence(3, [1, 2])
    with pytest.raises(ValueError, match="sequence id 3 is already present"):
        kv.add_sequence(3, [1, 2])


def test_commit_beyond_the_reserved_blocks_is_a_value_error() -> None:
    kv = make_kv()
    kv.add_sequence(1, list(range(8)))
    assert kv.reserve(1, 4)
    with pytest.raises(ValueError, match="num_computed 8"):
        kv.commit(1, list(range(8)), 8)


@pytest.mark.parametrize("tokens_per_block, num_blocks", [(0, 4), (4, -1)])
def test_invalid_config_is_a_value_error(tokens_per_block: int, num_blocks: int) -> None:
    with pytest.raises(ValueError, match="KVCacheConfig"):
        make_kv(num_blocks=num_blocks, tokens_per_block=tokens_per_block)


def test_a_sequence_may_decline_reuse_and_still_publishes_its_blocks():
    kv = make_kv(num_blocks=8)
    tokens = list(range(9))
    prefill(kv, 1, tokens)
    assert kv.add_sequence(2, tokens, allow_reuse=False) == 0
    assert kv.num_reusable_tokens(tokens, allow_reuse=False) == 0
    assert kv.add_sequence(3, tokens) == 8
