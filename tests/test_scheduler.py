"""In-flight batching scheduler (cpp/src/scheduler.cpp), driven through SchedulerHarness.

The harness plays the executor: each iteration it schedules, "computes" the scheduled tokens
(advance: num_computed grows, full blocks are committed) and, for a request that reached its
last token, "samples" the next one (complete). Sampled tokens are a fixed function of request id
and position, so a request's final tokens are known in advance whatever the batching did.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from trtllm_runtime import _core

MAX_UTIL = _core.SchedulerPolicy.MAX_UTILIZATION
NO_EVICT = _core.SchedulerPolicy.GUARANTEED_NO_EVICT


def sampled_token(req_id: int, position: int) -> int:
    return (req_id * 7919 + position * 31) % 30011


def expected_tokens(req_id: int, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = list(prompt)
    for _ in range(max_new_tokens):
        out.append(sampled_token(req_id, len(out)))
    return out


def make(
    *,
    num_blocks: int = 256,
    tokens_per_block: int = 4,
    reuse: bool = False,
    max_batch_size: int = 64,
    max_num_tokens: int = 64,
    policy: _core.SchedulerPolicy = MAX_UTIL,
    chunking: bool = True,
) -> tuple[_core.SchedulerHarness, _core.KVCacheManager]:
    kv = _core.KVCacheManager(
        _core.KVCacheConfig(tokens_per_block=tokens_per_block, num_blocks=num_blocks, enable_prefix_reuse=reuse)
    )
    config = _core.SchedulerConfig(
        max_batch_size=max_batch_size,
        max_num_tokens=max_num_tokens,
        policy=policy,
        enable_chunked_context=chunking,
    )
    return _core.SchedulerHarness(config, kv), kv


@dataclass
class Iteration:
    plan: list[tuple[int, int]]
    preempted: list[int]
    decode_ids: set[int] = field(default_factory=set)  # running with one token left before scheduling


def step(h: _core.SchedulerHarness) -> Iteration:
    """One engine iteration: schedule, compute every scheduled chunk, sample where due."""
    decode_ids = {i for i in h.running_ids() if h.request(i).num_remaining == 1}
    plan, preempted = h.schedule()
    for req_id, n in plan:
        if h.advance(req_id, n):
            h.complete(req_id, sampled_token(req_id, len(h.request(req_id).tokens)))
    return Iteration(plan, preempted, decode_ids)


def run_to_completion(h: _core.SchedulerHarness, max_iterations: int = 10_000) -> list[Iteration]:
    history = []
    while not h.all_finished():
        assert len(history) < max_iterations, "scheduler made no progress"
        history.append(step(h))
    return history


# --- token budget and chunking ----------------------------------------------------------------


def test_token_budget_and_batch_size_hold_every_iteration() -> None:
    rng = random.Random(1)
    h, _ = make(max_num_tokens=24, max_batch_size=5)
    for i in range(30):
        h.add_request(i, [rng.randrange(1000) for _ in range(rng.randrange(1, 60))], rng.randrange(1, 12))
    for it in run_to_completion(h):
        assert sum(n for _, n in it.plan) <= 24
        assert 0 < len(it.plan) <= 5
        assert len(h.running_ids()) <= 5


def test_chunked_prefill_splits_a_long_prompt_across_iterations_and_completes_it() -> None:
    h, kv = make(max_num_tokens=16)
    prompt = list(range(40))
    h.add_request(0, prompt, 3)
    history = run_to_completion(h)
    assert [it.plan for it in history] == [[(0, 16)], [(0, 16)], [(0, 8)], [(0, 1)], [(0, 1)]]
    assert h.request(0).tokens == expected_tokens(0, prompt, 3)
    assert kv.stats().used_blocks == 0


def test_chunking_disabled_keeps_each_prompt_whole() -> None:
    h, _ = make(max_num_tokens=16, chunking=False)
    h.add_request(0, list(range(10)), 2)
    h.add_request(1, list(range(10)), 2)
    history = run_to_completion(h)
    # Request 1 does not fit the 6 tokens left in iteration 0, so it waits rather than split.
    assert history[0].plan == [(0, 10)]
    assert history[1].plan == [(0, 1), (1, 10)]


def test_chunking_enabled_fills_the_budget_with_a_partial_prompt() -> None:
    h, _ = make(max_num_tokens=16, chunking=True)
    h.add_request(0, list(range(10)), 2)
    h.add_request(1, list(range(10)), 2)
    history = run_to_completion(h)
    assert history[0].plan == [(0, 10), (1, 6)]
    assert history[1].plan == [(0, 1), (1, 4)]


def test_decode_requests_come_before_context_chunks() -> None:
    h, _ = make(max_num_tokens=64)
    h.add_request(0, list(range(5)), 8)
    step(h)
    h.add_request(1, list(range(20)), 8)
    h.add_request(2, list(range(7)), 8)
    assert step(h).plan == [(0, 1), (1, 20), (2, 7)]
    assert step(h).plan == [(0, 1), (1, 1), (2, 1)]


# --- admission --------------------------------------------------------------------------------


def test_max_batch_size_caps_running_requests() -> None:
    h, _ = make(max_batch_size=3)
    for i in range(10):
        h.add_request(i, [i, i + 1], 4)
    it = step(h)
    assert [i for i, _ in it.plan] == [0, 1, 2]
    assert h.running_ids() == [0, 1, 2]
    assert h.waiting_ids() == list(range(3, 10))


def test_waiting_requests_are_admitted_first_come_first_served() -> None:
    rng = random.Random(2)
    h, _ = make(max_num_tokens=20, max_batch_size=4, num_blocks=40)
    for i in range(25):
        h.add_request(i, [rng.randrange(100) for _ in range(rng.randrange(1, 30))], rng.randrange(1, 6))
    admitted: list[int] = []
    for it in run_to_completion(h):
        admitted += [i for i, _ in it.plan if i not in admitted]
    assert admitted == list(range(25))


def test_a_waiting_request_that_does_not_fit_blocks_those_behind_it() -> None:
    h, _ = make(max_num_tokens=16, chunking=False)
    h.add_request(0, list(range(10)), 5)
    h.add_request(1, list(range(10)), 5)  # does not fit the 6 tokens left
    h.add_request(2, [1, 2], 5)  # would fit, but may not skip ahead of request 1
    assert step(h).plan == [(0, 10)]
    assert h.waiting_ids() == [1, 2]


def test_admission_reuses_a_cached_prompt_prefix() -> None:
    h, kv = make(reuse=True, max_num_tokens=64)
    system = list(range(100, 116))  # four full blocks
    h.add_request(0, system + [1, 2], 1)
    run_to_completion(h)
    h.add_request(1, system + [3, 4, 5], 1)
    it = step(h)
    assert it.plan == [(1, 3)]  # only the new suffix is computed
    assert kv.stats().reused_tokens == 16


# --- blocks: max_utilization ------------------------------------------------------------------


def test_max_utilization_preempts_the_newest_request_when_blocks_run_out() -> None:
    # 5 blocks of 4 tokens; three requests of 4-token prompts each start in one block and grow.
    h, kv = make(num_blocks=5, tokens_per_block=4, max_num_tokens=64)
    for i in range(3):
        h.add_request(i, [10 * i + j for j in range(4)], 6)
    assert step(h).plan == [(0, 4), (1, 4), (2, 4)]
    # Each now needs a second block for token 5: requests 0 and 1 take the last two; 2 is the newest.
    it = step(h)
    assert it.plan == [(0, 1), (1, 1)]
    assert it.preempted == [2]
    r2 = h.request(2)
    assert (r2.num_computed, r2.num_preemptions, len(r2.tokens)) == (0, 1, 5)
    assert h.waiting_ids() == [2] and not kv.has_sequence(2)


def test_a_request_that_is_itself_the_newest_preempts_itself() -> None:
    h, _ = make(num_blocks=3, tokens_per_block=4, max_num_tokens=64)
    h.add_request(0, [1, 2, 3, 4], 3)
    h.add_request(1, [5, 6, 7, 8], 3)
    step(h)
    it = step(h)  # 0 takes the only free block; 1 then has nobody newer to evict
    assert it.plan == [(0, 1)] and it.preempted == [1]
    assert h.running_ids() == [0]


def test_victims_are_taken_newest_first_and_wait_in_arrival_order() -> None:
    # 4 blocks, four 4-token prompts: all need a second block at once. Request 0 evicts 3, then
    # request 1 evicts 2; the victims return to the front of `waiting`, the older one first.
    h, _ = make(num_blocks=4, tokens_per_block=4, max_num_tokens=64)
    for i in range(4):
        h.add_request(i, [i] * 4, 4)
    h.add_request(4, [9], 4)
    assert step(h).plan == [(0, 4), (1, 4), (2, 4), (3, 4)]
    it = step(h)
    assert it.preempted == [3, 2]
    assert it.plan == [(0, 1), (1, 1)]
    assert h.running_ids() == [0, 1]
    assert h.waiting_ids() == [2, 3, 4]


def test_preempted_request_recomputes_its_tokens_and_completes_with_all_of_them() -> None:
    h, kv = make(num_blocks=5, tokens_per_block=4, max_num_tokens=64)
    prompts = {i: [10 * i + j for j in range(4)] for i in range(3)}
    for i, p in prompts.items():
        h.add_request(i, p, 6)
    history = run_to_completion(h)
    assert any(it.preempted for it in history)
    # The recompute feeds prompt and generated tokens alike, in one chunk here.
    assert (2, 5) in [e for it in history for e in it.plan]
    for i, p in prompts.items():
        assert h.request(i).tokens == expected_tokens(i, p, 6)
    assert h.request(2).num_preemptions >= 1
    assert kv.stats().used_blocks == 0


def test_no_admission_in_an_iteration_that_preempted() -> None:
    # Request 1 grows out of the pool and preempts itself; a chunk of it would fit again at once
    # (its own block is free, and budget is left), but re-admitting it would only thrash.
    h, kv = make(num_blocks=3, tokens_per_block=4, max_num_tokens=5)
    h.add_request(0, [1, 2, 3, 4], 8)
    h.add_request(1, [5, 6], 8)
    while not (it := step(h)).preempted:
        pass
    assert it.preempted == [1] and it.plan == [(0, 1)]
    victim = h.request(1)
    budget_left = 5 - 1
    chunk = min(len(victim.tokens), budget_left)
    assert kv.blocks_needed_to_add(victim.tokens, chunk) <= kv.num_available_blocks  # would fit
    assert h.waiting_ids() == [1]


# --- blocks: guaranteed_no_evict --------------------------------------------------------------


def test_guaranteed_no_evict_reserves_the_whole_lifetime_at_admission() -> None:
    h, kv = make(num_blocks=16, tokens_per_block=4, policy=NO_EVICT)
    h.add_request(0, list(range(6)), 10)  # 16 tokens for its lifetime
    step(h)
    assert len(kv.block_table(0)) == 4


def test_guaranteed_no_evict_never_preempts_and_admits_only_what_fits() -> None:
    # 8 blocks of 4; each request's lifetime is 8 + 8 tokens = 4 blocks: two at a time.
    h, kv = make(num_blocks=8, tokens_per_block=4, policy=NO_EVICT)
    prompts = {i: [i] * 8 for i in range(6)}
    for i, p in prompts.items():
        h.add_request(i, p, 8)
    history = run_to_completion(h)
    assert not any(it.preempted for it in history)
    assert max(len(it.plan) for it in history) == 2
    for i, p in prompts.items():
        assert h.request(i).tokens == expected_tokens(i, p, 8)
        assert h.request(i).num_preemptions == 0


# --- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [MAX_UTIL, NO_EVICT], ids=["max_utilization", "guaranteed_no_evict"])
@pytest.mark.parametrize("chunking", [True, False], ids=["chunked", "whole"])
@pytest.mark.parametrize("reuse", [True, False], ids=["reuse", "no_reuse"])
def test_a_flood_of_requests_larger_than_the_pool_all_complete(
    policy: _core.SchedulerPolicy, chunking: bool, reuse: bool
) -> None:
    rng = random.Random(3)
    tokens_per_block, num_blocks, max_num_tokens = 4, 24, 32  # the pool holds 96 tokens
    h, kv = make(
        num_blocks=num_blocks,
        tokens_per_block=tokens_per_block,
        reuse=reuse,
        max_batch_size=8,
        max_num_tokens=max_num_tokens,
        policy=policy,
        chunking=chunking,
    )
    stems = [[rng.randrange(50) for _ in range(12)] for _ in range(3)]
    specs = {}
    for i in range(60):
        prompt = rng.choice(stems)[: rng.randrange(0, 13)] + [rng.randrange(50) for _ in range(rng.randrange(1, 16))]
        max_new = rng.randrange(1, 30)
        assert len(prompt) + max_new <= num_blocks * tokens_per_block  # each fits alone
        specs[i] = (prompt, max_new)
        h.add_request(i, prompt, max_new)

    history = run_to_completion(h)

    for it in history:
        assert sum(n for _, n in it.plan) <= max_num_tokens
        assert len(it.plan) <= 8
        kinds = [i in it.decode_ids for i, _ in it.plan]
        assert kinds == sorted(kinds, reverse=True), "generation requests must come first"
    for i, (prompt, max_new) in specs.items():
        r = h.request(i)
        assert r.finished and r.num_generated == max_new
        assert r.tokens == expected_tokens(i, prompt, max_new)
    if policy == NO_EVICT:
        assert not any(it.preempted for it in history)
    else:
        assert any(it.preempted for it in history)  # the pool really was too small
    assert kv.stats().used_blocks == 0


def test_a_request_that_can_never_fit_the_pool_does_not_stall_the_others() -> None:
    # The executor rejects such requests at enqueue; the scheduler must still terminate and keep
    # serving everyone behind it. Nothing is dropped: the giant stays waiting.
    for policy in (MAX_UTIL, NO_EVICT):
        h, _ = make(num_blocks=4, tokens_per_block=4, policy=policy)
        h.add_request(0, list(range(10)), 10)  # 20 tokens > 16 in the pool
        h.add_request(1, [1, 2, 3], 2)
        for _ in range(10):
            step(h)
        assert h.request(1).finished
        assert h.waiting_ids() == [0] and not h.request(0).finished


def test_a_recompute_longer_than_the_budget_is_chunked_even_with_chunking_off() -> None:
    # max_num_tokens 8, chunking off: the prompt fits an iteration but prompt + generated tokens
    # recomputed after a preemption do not; chunking it is the only way it can ever finish.
    h, _ = make(num_blocks=3, tokens_per_block=4, max_num_tokens=8, chunking=False)
    h.add_request(0, [1, 2, 3, 4], 6)
    h.add_request(1, [5, 6, 7, 8], 6)
    history = run_to_completion(h)
    recompute = [n for it in history for i, n in it.plan if i == 1]
    assert h.request(1).num_preemptions >= 1
    assert h.request(1).tokens == expected_tokens(1, [5, 6, 7, 8], 6)
    assert max(recompute) <= 8


# --- an independent model of the schedule when blocks are plentiful ---------------------------


def reference_schedule(
    requests: list[tuple[int, int, int]], max_batch_size: int, max_num_tokens: int, chunking: bool
) -> list[list[tuple[int, int]]]:
    """Plans of FCFS in-flight batching with unlimited KV blocks, written from the spec.

    requests: (id, prompt_len, max_new_tokens). Running requests in age order take one token
    (decode) or what their prompt needs of the budget left; new requests are admitted in order
    while batch size and budget allow; decodes are listed first.
    """
    state = {i: {"len": p, "done": 0, "gen": 0, "max_new": m} for i, p, m in requests}
    waiting = deque(i for i, _, _ in requests)
    running: list[int] = []
    plans = []

    def chunk(remaining: int, budget: int) -> int:
        if budget <= 0:
            return 0
        if chunking or remaining > max_num_tokens:
            return min(remaining, budget)
        return remaining if remaining <= budget else 0

    while waiting or running:
        budget = max_num_tokens
        generation, context = [], []
        for i in running:
            remaining = state[i]["len"] - state[i]["done"]
            n = min(1, budget) if remaining == 1 else chunk(remaining, budget)
            if n:
                (generation if remaining == 1 else context).append((i, n))
                budget -= n
        while waiting and len(running) < max_batch_size and budget > 0:
            i = waiting[0]
            n = chunk(state[i]["len"], budget)
            if not n:
                break
            running.append(waiting.popleft())
            context.append((i, n))
            budget -= n
        plan = generation + context
        plans.append(plan)
        for i, n in plan:
            s = state[i]
            s["done"] += n
            if s["done"] == s["len"]:
                s["len"] += 1
                s["gen"] += 1
                if s["gen"] == s["max_new"]:
                    running.remove(i)
    return plans


@pytest.mark.parametrize("chunking", [True, False], ids=["chunked", "whole"])
def test_schedule_matches_an_independent_model_when_blocks_are_plentiful(chunking: bool) -> None:
    rng = random.Random(4)
    requests = [(i, rng.randrange(1, 20), rng.randrange(1, 10)) for i in range(40)]
    h, _ = make(num_blocks=10_000, max_batch_size=6, max_num_tokens=20, chunking=chunking)
    for i, prompt_len, max_new in requests:
        h.add_request(i, [rng.randrange(100) for _ in range(prompt_len)], max_new)
    plans = [it.plan for it in run_to_completion(h)]
    assert plans == reference_schedule(requests, 6, 20, chunking)
