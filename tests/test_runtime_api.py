"""ModelRunner / LLM / trtllm-run behaviour: streaming, sampling, logprobs, and clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from trtllm_runtime import LLM, EngineDirError, ModelRunner, SamplingParams
from trtllm_runtime.cli.run import main as run_main

FAMILY = "llama3"
PROMPTS = [[1, 15, 27], [1, 99], [5, 6, 7, 8, 9, 10]]


@pytest.fixture(scope="module")
def runner(tiny_engines):
    with ModelRunner.from_dir(tiny_engines[FAMILY]) as r:
        yield r


def test_generate_returns_only_new_tokens_and_end_id_minus_one_never_stops(runner):
    out = runner.generate(PROMPTS, max_new_tokens=20, end_id=-1)
    assert [len(o) for o in out] == [20, 20, 20]
    assert all(0 <= t < 128 for o in out for t in o)


def test_end_id_stops_and_is_included(runner):
    first = runner.generate([PROMPTS[0]], max_new_tokens=20, end_id=-1)[0]
    stop = first[5]
    out = runner.generate([PROMPTS[0]], max_new_tokens=20, end_id=stop, return_dict=True)
    assert out["output_ids"][0] == first[: first.index(stop) + 1]
    assert out["finish_reasons"] == ["end_id"]


def test_min_new_tokens_suppresses_end_id(runner):
    first = runner.generate([PROMPTS[0]], max_new_tokens=8, end_id=-1)[0]
    out = runner.generate([PROMPTS[0]], max_new_tokens=8, end_id=first[0], min_new_tokens=3)[0]
    assert first[0] not in out[:3] and len(out) >= 3


def test_streaming_yields_growing_outputs_equal_to_the_batch_result(runner):
    final = runner.generate(PROMPTS, max_new_tokens=10, end_id=-1)
    steps = list(runner.generate(PROMPTS, max_new_tokens=10, end_id=-1, streaming=True))
    assert len(steps) >= 10
    assert steps[-1] == final
    assert all(len(a[0]) <= len(b[0]) for a, b in zip(steps, steps[1:]))


def test_seeded_sampling_is_reproducible_and_seed_dependent(runner):
    kw = dict(max_new_tokens=24, end_id=-1, temperature=1.0, top_p=0.9)
    a = runner.generate(PROMPTS, random_seed=3, **kw)
    b = runner.generate(PROMPTS, random_seed=3, **kw)
    c = runner.generate(PROMPTS, random_seed=4, **kw)
    assert a == b and a != c


def test_logprobs_are_log_softmax_of_the_generation_logits(runner):
    out = runner.generate([PROMPTS[1]], max_new_tokens=6, end_id=-1, num_logprobs=3, return_dict=True,
                          return_generation_logits=True)
    logits = out["generation_logits"][0].astype(np.float64)
    ref = logits - logits.max(-1, keepdims=True)
    ref -= np.log(np.exp(ref).sum(-1, keepdims=True))
    tokens = out["output_ids"][0]
    np.testing.assert_allclose(out["logprobs"][0], ref[np.arange(6), tokens], rtol=1e-4, atol=1e-4)
    for step, top in enumerate(out["top_logprobs"][0]):
        assert [t for t, _ in top] == np.argsort(-ref[step])[:3].tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_input_ids=[[]]), "prompt is empty"),
    (dict(batch_input_ids=[[1, 500]]), "outside the vocabulary"),
    (dict(batch_input_ids=[[1, 2]], max_new_tokens=300), "exceeds the engine's max_seq_len"),
    (dict(batch_input_ids=[[1, 2]], top_p=0.0), "top_p"),
    (dict(batch_input_ids=[[1, 2]], top_p=1.5), "top_p"),
    (dict(batch_input_ids=[[1, 2]], temperature=-1.0), "temperature"),
    (dict(batch_input_ids=[[1, 2]], max_new_tokens=0), "max_new_tokens"),
])
def test_bad_requests_raise_clear_errors_and_lose_nothing(runner, kwargs, message):
    with pytest.raises(ValueError, match=message):
        runner.generate(**kwargs)
    assert runner.generate([PROMPTS[0]], max_new_tokens=4, end_id=-1)[0]  # still serving


def test_a_batch_is_scheduled_together_and_a_bad_member_queues_none(runner):
    # generate() queues its prompts at once: the first iteration prefills all three, and 4 new
    # tokens take exactly 4 iterations, however the threads interleave.
    before = runner.client.stats()
    assert [len(o) for o in runner.generate(PROMPTS, max_new_tokens=4, end_id=-1)] == [4, 4, 4]
    after = runner.client.stats()
    assert after["iterations"] - before["iterations"] == 4
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] == sum(map(len, PROMPTS))
    with pytest.raises(ValueError, match="request 1 of the batch: prompt token 500"):
        runner.generate([PROMPTS[0], [1, 500]], max_new_tokens=4)
    assert runner.client.stats()["prompt_tokens_computed"] == after["prompt_tokens_computed"]  # none ran


def test_engine_dir_missing_files_is_a_clear_error(tiny_engines, tmp_path):
    with pytest.raises(EngineDirError, match="does not exist"):
        ModelRunner.from_dir(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_engines[FAMILY], broken)
    (broken / "rank0.engine").unlink()
    with pytest.raises(EngineDirError, match="missing rank0.engine"):
        ModelRunner.from_dir(broken)


def test_llm_runs_token_prompts_with_n_samples(tiny_engines):
    with LLM(tiny_engines[FAMILY]) as llm:
        [out] = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=8, n=3, seed=1, temperature=1.0, logprobs=2))
        greedy = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
        with pytest.raises(ValueError, match="no tokenizer"):
            llm.generate(["text needs a tokenizer"])
    assert len(out.outputs) == 3 and all(len(o.token_ids) == 8 for o in out.outputs)
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1  # independent samples
    assert all(len(o.logprobs) == 8 and o.cumulative_logprob < 0 for o in out.outputs)
    with ModelRunner.from_dir(tiny_engines[FAMILY]) as r:
        assert greedy[0].token_ids == r.generate([PROMPTS[0]], max_new_tokens=8, end_id=-1)[0]


def test_llm_queues_every_prompt_and_sample_at_once(tiny_engines):
    # 3 prompts x 2 samples in the first iteration, whatever the thread timing: 4 tokens, 4 iterations.
    with LLM(tiny_engines[FAMILY]) as llm:
        before = llm.runner.client.stats()["iterations"]
        outs = llm.generate(PROMPTS, SamplingParams(max_tokens=4, n=2, seed=3, temperature=1.0, ignore_eos=True))
        assert llm.runner.client.stats()["iterations"] - before == 4
        with pytest.raises(ValueError, match="request 1 of the batch"):  # the second prompt's first sample
            llm.generate([PROMPTS[0], [1, 500]], SamplingParams(max_tokens=4))
        assert llm.runner.client.stats()["num_waiting"] == 0
    assert [[len(o.token_ids) for o in out.outputs] for out in outs] == [[4, 4]] * 3


def test_trtllm_run_prints_tokens_and_speed(tiny_engines, capsys):
    assert run_main(["--engine-dir", str(tiny_engines[FAMILY]), "--input-ids", "1,15,27", "--max-new-tokens", "5",
                     "--ignore-eos"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "tokens: [" in out


def test_trtllm_run_bad_engine_dir_is_one_line(tmp_path, capsys):
    assert run_main(["--engine-dir", str(tmp_path), "--input-ids", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trtllm-run: error:") and "Traceback" not in err


def test_cancelling_shows_the_freed_kv_blocks_in_the_stats_at_once(runner):
    handle = runner.submit([1, 5, 6], max_new_tokens=200, end_id=-1)
    stream = handle.responses()
    next(stream)
    handle.cancel()
    last = list(stream)[-1]
    assert last["finish_reason"] == "cancelled"
    # No iteration runs after a lone cancellation, so the stats must be refreshed where it is handled.
    stats = runner.client.stats()
    assert stats["kv_blocks_used"] == 0 and stats["num_running"] == 0


def test_a_script_that_never_closes_its_runner_exits_cleanly(tiny_engines):
    import subprocess
    import sys

    script = (f"from trtllm_runtime import ModelRunner\n"
              f"r = ModelRunner.from_dir({str(tiny_engines[FAMILY])!r}, kv_cache_bytes=1 << 22)\n"
              f"print(r.generate([[1, 2, 3]], max_new_tokens=3, end_id=-1))\n")
    for _ in range(3):  # the abort this guards against depends on thread timing: try a few times
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
