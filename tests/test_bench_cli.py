"""trtllm-bench on a tiny CPU engine: the JSON it writes counts what it ran."""

from __future__ import annotations

import json

import pytest

from trtllm_runtime.cli import bench


def run_bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    assert bench.main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_latency_reports_ttft_and_decode_rate_of_one_request(tiny_engines, tmp_path):
    engine = tiny_engines["llama3"]
    r = run_bench(tmp_path, "latency", "--engine-dir", str(engine), "--input-len", "12", "--output-len", "9",
                  "--iterations", "2")
    assert (r["mode"], r["batch_size"], r["input_len"], r["output_len"], r["iterations"]) == ("latency", 1, 12, 9, 2)
    assert 0 < r["ttft_ms"] < 1e3 * r["latency_s"]
    assert r["decode_tokens_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(9 / r["latency_s"])
    assert r["engine_bytes"] == (engine / "rank0.engine").stat().st_size
    assert r["kv_cache_bytes"] > 0
    assert_step_split(r, r["latency_s"], min_iterations=9)  # a prefill, then one step per further token
    assert r["per_step"]["decode_iterations"] == r["per_step"]["iterations"] - 1  # all but the prefill


def assert_step_split(r: dict, wall_s: float, min_iterations: int) -> None:
    """The per-iteration split adds up to the run's wall time."""
    split = r["per_step"]
    assert split["iterations"] >= min_iterations
    assert split["forward_ms"] > 0 and split["step_host_ms"] >= 0 and split["outside_step_ms"] >= 0
    assert 0 <= split["broadcast_ms"] <= split["step_host_ms"]
    # The decode-only iterations' forward is part of all iterations' forward.
    assert 0 < split["decode_iterations"] <= split["iterations"] and split["decode_forward_ms"] > 0
    assert split["decode_iterations"] * split["decode_forward_ms"] <= split["iterations"] * split["forward_ms"] * (1 + 1e-9)
    total_ms = split["iterations"] * (split["forward_ms"] + split["step_host_ms"] + split["outside_step_ms"])
    assert total_ms == pytest.approx(1e3 * wall_s, rel=0.02)


def test_throughput_generates_every_requested_token(tiny_engines, tmp_path):
    r = run_bench(tmp_path, "throughput", "--engine-dir", str(tiny_engines["llama3"]), "--input-len", "8",
                  "--output-len", "5", "--num-requests", "6")
    assert (r["num_requests"], r["input_len"], r["output_len"]) == (6, 8, 5)
    assert r["output_tokens_per_s"] == pytest.approx(6 * 5 / r["seconds"])
    assert r["requests_per_s"] == pytest.approx(6 / r["seconds"])
    assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p99"] <= 1e3 * r["seconds"]
    assert 0 <= r["inter_token_ms"]["p50"] <= r["inter_token_ms"]["p99"]
    assert_step_split(r, r["seconds"], min_iterations=5)  # 6 requests of 5 tokens batch: >= 5 steps
    assert r["per_step"]["broadcast_ms"] < 1e-3, "one rank broadcasts no plan"


def test_bad_lengths_are_a_clear_error(tiny_engines, capsys):
    assert bench.main(["latency", "--engine-dir", str(tiny_engines["llama3"]), "--output-len", "0"]) == 2
    assert "--output-len must be >= 1, got 0" in capsys.readouterr().err
