"""trtllm-serve under load: 200 concurrent streaming requests all complete, none lost or
duplicated, and each one's greedy tokens are those it gets running alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("pydantic", reason="the serve extra is not installed")
pytest.importorskip("jinja2", reason="the serve extra is not installed")

from serve_helpers import serve
from trtllm_runtime import ModelRunner
from trtllm_runtime.tokenizer import Tokenizer

NUM_REQUESTS = 200
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def server(tiny_text_engine, tmp_path_factory):
    with serve(tiny_text_engine, tmp_path_factory.mktemp("logs"), "--kv-cache-bytes", str(64 << 20)) as s:
        yield s


def _requests() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(NUM_REQUESTS):
        prompt = [1] + rng.integers(5, 128, int(rng.integers(2, 40))).tolist()
        out.append({"prompt": prompt, "max_tokens": int(rng.integers(4, 24)), "temperature": 0, "logprobs": 0,
                    "stream": True, "user": f"client-{i}"})
    return out


async def _stream(client: httpx.AsyncClient, body: dict) -> dict:
    """One streaming request: its events' ids, generated tokens (from logprobs), text, end."""
    result: dict = {"ids": set(), "tokens": [], "text": "", "finish_reason": None, "done": 0}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result["done"] += 1
                continue
            event = json.loads(line[len("data: "):])
            choice = event["choices"][0]
            result["ids"].add(event["id"])
            result["text"] += choice["text"]
            result["tokens"] += choice["logprobs"]["tokens"]
            result["finish_reason"] = choice["finish_reason"] or result["finish_reason"]
    return result


async def _all(url: str, bodies: list[dict]) -> list[dict]:
    limits = httpx.Limits(max_connections=NUM_REQUESTS, max_keepalive_connections=NUM_REQUESTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        return await asyncio.gather(*(_stream(client, b) for b in bodies))


def test_200_concurrent_streams_match_running_alone(server, tiny_text_engine):
    bodies = _requests()
    results = asyncio.run(_all(server.url, bodies))

    with ModelRunner.from_dir(tiny_text_engine, kv_cache_bytes=64 << 20) as runner:
        alone = [runner.generate([b["prompt"]], max_new_tokens=b["max_tokens"], return_dict=True) for b in bodies]
    tokenizer = Tokenizer.from_dir(tiny_text_engine)

    assert len(results) == NUM_REQUESTS
    all_ids = [next(iter(r["ids"])) for r in results]
    assert all(len(r["ids"]) == 1 for r in results) and len(set(all_ids)) == NUM_REQUESTS
    for i, (result, ref) in enumerate(zip(results, alone)):
        ref_ids = ref["output_ids"][0]
        assert result["done"] == 1, i
        assert result["tokens"] == [tokenizer.decode([t], skip_special_tokens=False) for t in ref_ids], i
        assert result["text"] == tokenizer.decode(ref_ids), i
        assert result["finish_reason"] == {"end_id": "stop", "length": "length"}[ref["finish_reasons"][0]], i

    m = server.wait_for_metrics(trtllm_queue_depth=0, trtllm_num_requests_running=0, trtllm_kv_cache_blocks_used=0)
    assert m["trtllm_generation_tokens_total"] == sum(len(a["output_ids"][0]) for a in alone)
    assert m["trtllm_time_to_first_token_seconds_count"] == NUM_REQUESTS


def test_bench_serving_script_reports_latency_percentiles(server, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(SCRIPTS / "bench_serving.py"), "--base-url", server.url,
                          "--num-prompts", "16", "--input-len", "12", "--output-len", "8", "--request-rate", "200",
                          "--max-concurrency", "8", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Serving Benchmark Result" in run.stdout and "Median TTFT (ms)" in run.stdout
    result = json.loads(out.read_text())
    assert result["successful_requests"] == 16 and result["total_output_tokens"] == 16 * 8
    assert 0 < result["ttft_ms"]["median"] <= result["ttft_ms"]["p99"]
    assert result["itl_ms"]["mean"] > 0 and result["output_token_throughput_per_s"] > 0
