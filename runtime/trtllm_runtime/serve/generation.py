"""One HTTP request's generation, bridged from the executor's router thread into asyncio.

The router thread hands each response to a callback that only schedules `queue.put_nowait` on
the event loop (`call_soon_threadsafe`), so no thread blocks per request and the loop never
waits on generation. Text, stop strings, n samples and logprobs come from `GenerationStream`,
the same code `LLM.generate` runs, so the server answers what the Python API answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from trtllm_runtime.llm import LLM, RequestOutput, SamplingParams, start_together
from trtllm_runtime.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass
class SampleEvent:
    """New output of sample `sample` (of n) of prompt `prompt` (of the request's batch)."""

    prompt: int
    sample: int
    output: RequestOutput


class Generation:
    """All prompts x n samples of one request. `start` submits (ValueError on bad input);
    `events` yields as tokens arrive; `cancel` stops what is unfinished (KV blocks return)."""

    def __init__(self, llm: LLM, prompts: Sequence[list[int]], params: SamplingParams, metrics: ServerMetrics,
                 arrival_s: float) -> None:
        self.llm = llm
        self.streams = [llm.generate_stream(ids, params) for ids in prompts]
        self.metrics = metrics
        self.arrival_s = arrival_s
        self._queue: asyncio.Queue[tuple[int, int, dict]] = asyncio.Queue()
        self._last_token_s: dict[tuple[int, int], float] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def forward(prompt: int, sample: int, response: dict) -> None:  # on the router thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._queue.put_nowait, (prompt, sample, response))

        start_together(self.llm.runner, self.streams, forward)  # all at once, or none (ValueError)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.streams)

    async def events(self) -> AsyncIterator[SampleEvent]:
        """RuntimeError if the executor failed a request."""
        while not self.finished:
            p, i, response = await self._queue.get()
            stream = self.streams[p]
            if stream.finish[i] is not None:
                continue  # a response that was on its way when a stop string ended the sample
            self._observe(p, i, response)
            yield SampleEvent(p, i, stream.absorb(i, response))

    def cancel(self) -> None:
        for stream in self.streams:
            if not stream.finished:
                stream.cancel()

    def _observe(self, p: int, i: int, response: dict) -> None:
        n = len(response["tokens"])
        received = response.get("received_s", time.perf_counter())
        if n:
            last = self._last_token_s.get((p, i))
            label = self.metrics.model_name
            if last is None:
                self.metrics.ttft.labels(label).observe(received - self.arrival_s)
            else:
                for _ in range(n):  # a response carrying k tokens spreads its gap over them
                    self.metrics.inter_token.labels(label).observe((received - last) / n)
            self._last_token_s[(p, i)] = received
            self.metrics.tokens_generated(n, received)
        if response["finished"]:
            self.metrics.e2e.labels(self.metrics.model_name).observe(received - self.arrival_s)


def stream_delta(text: str, sent: int, finished: bool, stops: Sequence[str] | None) -> str:
    """The part of `text` past `sent` that is safe to stream now.

    Held back until more tokens come: a tail that could be the start of a stop string (the
    final text cuts the stop string off) and a trailing U+FFFD, which is an incomplete UTF-8
    sequence whose remaining bytes are in the next token.
    """
    if finished:
        return text[sent:]
    end = len(text)
    for stop in stops or ():
        for k in range(min(len(stop) - 1, end - sent), 0, -1):
            if text.endswith(stop[:k]):
                end = min(end, len(text) - k)
                break
    while end > sent and text[end - 1] == "\ufffd":
        end -= 1
    return text[sent:end]
