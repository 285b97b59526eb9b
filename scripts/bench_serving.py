#!/usr/bin/env python3
"""Serving benchmark for an OpenAI-compatible server (trtllm-serve, vLLM, ...), in the style of
vLLM's benchmark_serving.py: replay N streaming /v1/completions requests at a request rate
(Poisson arrivals) or a fixed concurrency, and report TTFT, TPOT, inter-token latency and E2E
latency percentiles plus request and token throughput.

Prompts are random token ids (the "random" dataset: no tokenizer needed, exact lengths) and
every request generates exactly its output length (ignore_eos). Needs httpx.

    python scripts/bench_serving.py --base-url http://127.0.0.1:8000 --num-prompts 200 \
        --input-len 128 --output-len 128 --request-rate 8 [--max-concurrency 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np


@dataclass
class RequestResult:
    prompt_len: int
    output_len: int
    ok: bool = False
    error: str = ""
    start_s: float = 0.0
    token_times_s: list[float] = field(default_factory=list)  # arrival of each streamed token
    num_tokens: int = 0

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.start_s

    @property
    def e2e_s(self) -> float:
        return self.token_times_s[-1] - self.start_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's TPOT)."""
        return (self.e2e_s - self.ttft_s) / (self.num_tokens - 1) if self.num_tokens > 1 else None


def make_requests(vocab_size: int, num: int, input_len: int, output_len: int, range_ratio: float,
                  seed: int) -> list[tuple[list[int], int]]:
    """Lengths uniform in [len * (1 - ratio), len * (1 + ratio)], ids uniform over the vocabulary."""
    rng = np.random.default_rng(seed)

    def lengths(mean: int) -> np.ndarray:
        low, high = max(1, int(mean * (1 - range_ratio))), max(1, int(mean * (1 + range_ratio)))
        return rng.integers(low, high + 1, num)

    in_lens, out_lens = lengths(input_len), lengths(output_len)
    return [(rng.integers(0, vocab_size, int(n)).tolist(), int(o)) for n, o in zip(in_lens, out_lens)]


async def one_request(client: httpx.AsyncClient, model: str, prompt: list[int], output_len: int) -> RequestResult:
    result = RequestResult(len(prompt), output_len, start_s=time.perf_counter())
    body = {"model": model, "prompt": prompt, "max_tokens": output_len, "min_tokens": output_len,
            "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread()).decode()[:200]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[len("data: "):])
                now = time.perf_counter()
                if "error" in event:
                    result.error = event["error"]["message"]
                    return result
                if event.get("usage"):
                    result.num_tokens = event["usage"]["completion_tokens"]
                elif event["choices"]:  # trtllm-serve sends an event per executor response: a token
                    result.token_times_s.append(now)
        result.ok = bool(result.token_times_s)
        result.num_tokens = result.num_tokens or len(result.token_times_s)
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def run(args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.base_url, timeout=args.timeout_s, limits=limits,
                                 headers=headers) as client:
        models = (await client.get("/v1/models")).raise_for_status().json()["data"]
        model = args.model or models[0]["id"]
        vocab_size = args.vocab_size or models[0].get("vocab_size")
        if not vocab_size:
            raise SystemExit("bench_serving: error: the server does not report vocab_size; pass --vocab-size")
        requests = make_requests(vocab_size, args.num_prompts, args.input_len, args.output_len,
                                 args.random_range_ratio, args.seed)
        await one_request(client, model, requests[0][0], 2)  # warm up

        limiter = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
        rng = np.random.default_rng(args.seed + 1)

        async def limited(prompt: list[int], output_len: int) -> RequestResult:
            if limiter is None:
                return await one_request(client, model, prompt, output_len)
            async with limiter:
                return await one_request(client, model, prompt, output_len)

        start = time.perf_counter()
        tasks = []
        for prompt, output_len in requests:
            tasks.append(asyncio.create_task(limited(prompt, output_len)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.exponential(1.0 / args.request_rate))  # Poisson arrivals
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return summarize(results, duration, args)


def percentiles(values: list[float], scale: float = 1e3) -> dict[str, float]:
    if not values:
        return {k: 0.0 for k in ("mean", "median", "p90", "p99")}
    a = np.asarray(values) * scale
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99))}


def summarize(results: list[RequestResult], duration_s: float, args: argparse.Namespace) -> dict:
    ok = [r for r in results if r.ok]
    output_tokens = sum(r.num_tokens for r in ok)
    input_tokens = sum(r.prompt_len for r in ok)
    return {
        "base_url": args.base_url, "num_prompts": len(results), "request_rate": args.request_rate,
        "max_concurrency": args.max_concurrency, "input_len": args.input_len, "output_len": args.output_len,
        "successful_requests": len(ok), "failed_requests": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "duration_s": duration_s, "total_input_tokens": input_tokens, "total_output_tokens": output_tokens,
        "request_throughput_per_s": len(ok) / duration_s, "output_token_throughput_per_s": output_tokens / duration_s,
        "total_token_throughput_per_s": (input_tokens + output_tokens) / duration_s,
        "ttft_ms": percentiles([r.ttft_s for r in ok]),
        "tpot_ms": percentiles([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": percentiles([b - a for r in ok for a, b in zip(r.token_times_s, r.token_times_s[1:])]),
        "e2e_latency_ms": percentiles([r.e2e_s for r in ok]),
    }


def print_report(s: dict) -> None:
    rows = [("Successful requests", s["successful_requests"]), ("Failed requests", s["failed_requests"]),
            ("Benchmark duration (s)", f"{s['duration_s']:.2f}"), ("Total input tokens", s["total_input_tokens"]),
            ("Total generated tokens", s["total_output_tokens"]),
            ("Request throughput (req/s)", f"{s['request_throughput_per_s']:.2f}"),
            ("Output token throughput (tok/s)", f"{s['output_token_throughput_per_s']:.2f}"),
            ("Total token throughput (tok/s)", f"{s['total_token_throughput_per_s']:.2f}")]
    for name, title in (("ttft_ms", "Time to First Token"), ("tpot_ms", "Time per Output Token (excl. 1st token)"),
                        ("itl_ms", "Inter-token Latency"), ("e2e_latency_ms", "End-to-end Latency")):
        rows.append((f"---{title}---", ""))
        for stat in ("mean", "median", "p90", "p99"):
            rows.append((f"{stat.capitalize()} {name.split('_')[0].upper()} (ms)", f"{s[name][stat]:.2f}"))
    print("{s:=^60}".format(s=" Serving Benchmark Result "))
    for name, value in rows:
        print(f"{name:<45}{value:>15}")
    for error in s["errors"]:
        print(f"error: {error}")
    print("=" * 60)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", help="model id (default: the first of /v1/models)")
    p.add_argument("--api-key")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--random-range-ratio", type=float, default=0.0,
                   help="lengths uniform in [len*(1-r), len*(1+r)] (default 0: fixed)")
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="requests per second, Poisson arrivals (default inf: all at once)")
    p.add_argument("--max-concurrency", type=int, default=0, help="at most this many in flight (default: no cap)")
    p.add_argument("--vocab-size", type=int, help="prompt ids are drawn below this (default: from /v1/models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    for name in ("num_prompts", "input_len", "output_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.request_rate > 0:
        p.error(f"--request-rate must be > 0, got {args.request_rate}")
    if not 0 <= args.random_range_ratio < 1:
        p.error(f"--random-range-ratio must be in [0, 1), got {args.random_range_ratio}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = asyncio.run(run(args))
    print_report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
