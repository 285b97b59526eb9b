"""Prometheus metrics of the server (text exposition format at /metrics).

One registry per server (no process-global state), so several servers or tests can coexist.
Executor gauges (queue, running, KV blocks) are read from `ExecutorClient.stats()` at scrape
time; latency histograms are observed as responses stream out.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                      0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_TOKENS_PER_S_WINDOW_S = 10.0


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["model_name"]
        self.model_name = model_name
        self.requests = Counter("trtllm_requests", "HTTP requests answered, by endpoint and status code",
                                ["model_name", "endpoint", "status"], registry=r)
        self.finished = Counter("trtllm_request_finished", "Generation requests finished, by finish reason",
                                ["model_name", "finish_reason"], registry=r)
        self.prompt_tokens = Counter("trtllm_prompt_tokens", "Prompt tokens of admitted requests", labels, registry=r)
        self.generation_tokens = Counter("trtllm_generation_tokens", "Tokens generated", labels, registry=r)
        self.queue_depth = Gauge("trtllm_queue_depth",
                                 "Requests admitted by the server and not finished (bounded by --max-queue)",
                                 labels, registry=r)
        self.num_waiting = Gauge("trtllm_num_requests_waiting", "Executor requests waiting to be scheduled",
                                 labels, registry=r)
        self.num_running = Gauge("trtllm_num_requests_running", "Executor requests in the in-flight batch",
                                 labels, registry=r)
        self.kv_blocks_used = Gauge("trtllm_kv_cache_blocks_used", "KV cache blocks held by requests",
                                    labels, registry=r)
        self.kv_blocks_free = Gauge("trtllm_kv_cache_blocks_free", "KV cache blocks free (cached prefixes included)",
                                    labels, registry=r)
        self.kv_blocks_total = Gauge("trtllm_kv_cache_blocks_total", "KV cache blocks in the pool", labels, registry=r)
        self.tokens_per_s = Gauge("trtllm_generation_tokens_per_second",
                                  f"Tokens generated per second over the last {_TOKENS_PER_S_WINDOW_S:g} s",
                                  labels, registry=r)
        self.ttft = Histogram("trtllm_time_to_first_token_seconds",
                              "Time from a request's arrival to its first generated token", labels,
                              buckets=_LATENCY_BUCKETS_S, registry=r)
        self.inter_token = Histogram("trtllm_inter_token_latency_seconds",
                                     "Time between successive generated tokens of a request", labels,
                                     buckets=_LATENCY_BUCKETS_S, registry=r)
        self.e2e = Histogram("trtllm_e2e_request_latency_seconds",
                             "Time from a request's arrival to its last token", labels,
                             buckets=_LATENCY_BUCKETS_S, registry=r)
        self._recent_tokens: collections.deque[tuple[float, int]] = collections.deque()

    def request_answered(self, endpoint: str, status: int) -> None:
        self.requests.labels(self.model_name, endpoint, str(status)).inc()

    def tokens_generated(self, count: int, now_s: float) -> None:
        self.generation_tokens.labels(self.model_name).inc(count)
        self._recent_tokens.append((now_s, count))

    def render(self, executor_stats: dict[str, Any], queue_depth: int) -> bytes:
        m = self.model_name
        self.queue_depth.labels(m).set(queue_depth)
        self.num_waiting.labels(m).set(executor_stats["num_waiting"])
        self.num_running.labels(m).set(executor_stats["num_running"])
        self.kv_blocks_used.labels(m).set(executor_stats["kv_blocks_used"])
        self.kv_blocks_free.labels(m).set(executor_stats["kv_blocks_free"])
        self.kv_blocks_total.labels(m).set(executor_stats["kv_blocks_total"])
        now = time.perf_counter()
        while self._recent_tokens and self._recent_tokens[0][0] < now - _TOKENS_PER_S_WINDOW_S:
            self._recent_tokens.popleft()
        self.tokens_per_s.labels(m).set(sum(n for _, n in self._recent_tokens) / _TOKENS_PER_S_WINDOW_S)
        return generate_latest(self.registry)
