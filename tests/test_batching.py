"""In-flight batching never changes results: a request's greedy tokens are the same alone, mixed
with others, chunked, with prefix reuse, after preemption, and under either scheduler policy."""

from __future__ import annotations

import numpy as np
import pytest

from trtllm_runtime import ModelRunner

NEW = 12
FAMILY = "qwen3"  # GQA, q/k norm, rope: the most paths through attention


def requests() -> list[list[int]]:
    rng = np.random.default_rng(7)
    shared = rng.integers(0, 128, 24).tolist()
    out = []
    for i in range(16):
        length = int(rng.integers(1, 40))
        out.append((shared[: length // 2] if i % 3 == 0 else []) + rng.integers(0, 128, length).tolist())
    return out


@pytest.fixture(scope="module")
def alone(tiny_engines) -> list[list[int]]:
    with ModelRunner.from_dir(tiny_engines[FAMILY], enable_prefix_reuse=False) as runner:
        return [runner.generate([r], max_new_tokens=NEW, end_id=-1)[0] for r in requests()]


def run(engine, **options) -> dict:
    with ModelRunner.from_dir(engine, **options) as runner:
        out = runner.generate(requests(), max_new_tokens=NEW, end_id=-1, return_dict=True)
        out["runner_stats"] = runner.client.stats()
    return out


def test_mixed_batch_matches_alone(tiny_engines, alone):
    out = run(tiny_engines[FAMILY], enable_prefix_reuse=False)
    assert out["output_ids"] == alone


def test_forced_chunked_prefill_matches_alone(tiny_engines, alone):
    out = run(tiny_engines[FAMILY], max_num_tokens=16, enable_prefix_reuse=False)
    assert max(len(r) for r in requests()) > 16  # some prompts really are split
    assert out["output_ids"] == alone


def test_prefix_reuse_matches_alone_and_reuses(tiny_engines, alone):
    with ModelRunner.from_dir(tiny_engines[FAMILY], tokens_per_block=4) as runner:
        first = runner.generate(requests(), max_new_tokens=NEW, end_id=-1)
        again = runner.generate(requests(), max_new_tokens=NEW, end_id=-1, return_dict=True)
    assert first == alone and again["output_ids"] == alone
    assert sum(s["num_reused_tokens"] for s in again["stats"]) > 0


def test_preempted_requests_recompute_to_the_same_tokens(tiny_engines, alone):
    # 24 blocks of 4 tokens: a few requests at a time, so running ones must be preempted.
    out = run(tiny_engines[FAMILY], tokens_per_block=4, kv_cache_bytes=24 * block_bytes(tiny_engines[FAMILY], 4),
              enable_prefix_reuse=False)
    assert sum(s["num_preemptions"] for s in out["stats"]) > 0
    assert out["output_ids"] == alone


def test_guaranteed_no_evict_never_preempts_and_matches(tiny_engines, alone):
    out = run(tiny_engines[FAMILY], tokens_per_block=4, kv_cache_bytes=24 * block_bytes(tiny_engines[FAMILY], 4),
              scheduler_policy="guaranteed_no_evict", enable_prefix_reuse=False)
    assert sum(s["num_preemptions"] for s in out["stats"]) == 0
    assert out["output_ids"] == alone


def test_a_flood_larger_than_the_pool_completes(tiny_engines):
    prompts = [[(7 * i + j) % 128 for j in range(1 + i % 30)] for i in range(64)]
    with ModelRunner.from_dir(tiny_engines[FAMILY], tokens_per_block=4,
                              kv_cache_bytes=16 * block_bytes(tiny_engines[FAMILY], 4)) as runner:
        out = runner.generate(prompts, max_new_tokens=NEW, end_id=-1, return_dict=True)
        stats = runner.client.stats()
    assert [len(o) for o in out["output_ids"]] == [NEW] * 64
    assert set(out["finish_reasons"]) == {"length"}
    assert stats["kv_blocks_used"] == 0  # every block came back


def block_bytes(engine_dir, tokens_per_block: int) -> int:
    import json

    m = json.loads((engine_dir / "config.json").read_text())["model_config"]
    return 2 * m["num_key_value_heads"] * tokens_per_block * m["head_dim"] * 4 * m["num_hidden_layers"]
