"""LLM + SamplingParams: text in, text out (vLLM / TensorRT-LLM LLM API style)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trtllm_runtime.model_runner import ModelRunner
from trtllm_runtime.tokenizer import Tokenizer


@dataclass
class SamplingParams:
    """Per-request generation settings. Ranges are checked when the request is submitted."""

    max_tokens: int = 16
    min_tokens: int = 0
    n: int = 1                              # independent samples of the same prompt
    temperature: float = 1.0                # 0: greedy
    top_k: int = 0                          # 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None                 # sample i of n uses seed + i
    stop: str | list[str] | None = None     # stop strings, matched on the decoded text
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None             # None: off; k: the sampled token's and the top k
    prompt_logprobs: int | None = None      # needs an engine built with --gather-context-logits
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 20:
                raise ValueError(f"{name} must be in [0, 20] or None, got {value}")


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None                # "stop" or "length" (OpenAI's words), "cancelled"
    logprobs: list[dict[int, float]] | None = None   # per generated token: token -> logprob
    cumulative_logprob: float | None = None


@dataclass
class RequestOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict[int, float] | None] | None = None
    finished: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids


_FINISH_REASONS = {"end_id": "stop", "stop_token": "stop", "stop_sequence": "stop", "length": "length",
                   "cancelled": "cancelled"}


class LLM:
    """Loads an engine dir and its tokenizer. `generate` runs every prompt (and every one of n
    samples) in flight together."""

    def __init__(self, engine_dir: str | Path, **runner_options: Any) -> None:
        self.runner = ModelRunner.from_dir(engine_dir, **runner_options)
        # An engine without tokenizer files still serves token-id prompts (text fields stay empty).
        self.tokenizer = Tokenizer.from_dir(engine_dir) if Tokenizer.available(engine_dir) else None

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 sampling_params: SamplingParams | None = None) -> list[RequestOutput] | None:
        """The outputs, in prompt order; None on a follower rank of a tensor-parallel mpirun job."""
        params = sampling_params or SamplingParams()
        if not self.runner.is_leader:
            return None
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        streams = [self.generate_stream(p, params) for p in prompts]
        start_together(self.runner, streams)
        return [s.result() for s in streams]

    def generate_stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> "GenerationStream":
        return GenerationStream(self, prompt, params or SamplingParams())


class GenerationStream:
    """One prompt's n samples in flight: iterate for incremental RequestOutputs, or call result()."""

    def __init__(self, llm: LLM, prompt: str | Sequence[int], params: SamplingParams) -> None:
        self.llm, self.params = llm, params
        if isinstance(prompt, str):
            if llm.tokenizer is None:
                raise ValueError(f"{llm.runner.engine_dir} has no tokenizer.json: pass token ids instead of text")
            self.prompt_text: str | None = prompt
            self.prompt_ids = llm.tokenizer.encode(prompt)
        else:
            self.prompt_text, self.prompt_ids = None, [int(t) for t in prompt]
        self.handles: list[Any] = []
        n = params.n
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.texts = [""] * n
        self.logprobs: list[list[dict[int, float]]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.prompt_logprobs: list[dict[int, float] | None] | None = None
        self.metrics: dict[str, Any] = {}

    def requests(self) -> list[dict[str, Any]]:
        """The n samples as the executor takes them (sample i seeded with seed + i)."""
        p, runner = self.params, self.llm.runner
        return [runner.request_options(
            self.prompt_ids, max_new_tokens=p.max_tokens, min_new_tokens=p.min_tokens,
            end_id=-1 if p.ignore_eos else None, stop_token_ids=p.stop_token_ids, temperature=p.temperature,
            top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, repetition_penalty=p.repetition_penalty,
            presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
            random_seed=None if p.seed is None else p.seed + i, num_logprobs=-1 if p.logprobs is None else p.logprobs,
            return_context_logits=p.prompt_logprobs is not None and i == 0) for i in range(p.n)]

    def start(self, on_response: Callable[[int, dict], None] | None = None) -> None:
        """Submit the n samples. With `on_response(i, response)`, responses go to that callback
        (on the router thread; it must not block) and the caller feeds them to `absorb`,
        instead of iterating this stream."""
        if not self.handles:
            start_together(self.llm.runner, [self], None if on_response is None else lambda _, i, r: on_response(i, r))

    def cancel(self) -> None:
        for h in self.handles:
            h.cancel()

    def __iter__(self) -> Iterator[RequestOutput]:
        """Yields the output so far each time a sample gets new tokens; the last one is final."""
        self.start()
        streams = [h.responses() for h in self.handles]
        try:
            for i, stream in enumerate(streams):
                for response in stream:
                    yield self.absorb(i, response)
        finally:
            if any(f is None for f in self.finish):
                self.cancel()

    def result(self) -> RequestOutput:
        last = None
        for last in self:
            pass
        assert last is not None
        return last

    @property
    def finished(self) -> bool:
        return all(f is not None for f in self.finish)

    def absorb(self, i: int, response: dict) -> RequestOutput:
        """Take in one response of sample i; returns the output so far."""
        self._absorb(i, response)
        return self._output(finished=self.finished)

    def _absorb(self, i: int, response: dict) -> None:
        if response.get("error"):
            raise RuntimeError(f"request {response['request_id']} failed: {response['error']}")
        if self.finish[i] is not None:
            return  # stopped on a stop string already; later tokens are dropped
        tok = self.llm.tokenizer
        self.tokens[i].extend(response["tokens"])
        for lp, top in zip(response.get("logprobs", []), response.get("top_logprobs", [])):
            entry = {t: l for t, l in top}
            entry[self.tokens[i][len(self.logprobs[i])]] = lp
            self.logprobs[i].append(entry)
        if "context_logits" in response:
            self.prompt_logprobs = _prompt_logprobs(response["context_logits"], self.prompt_ids,
                                                    self.params.prompt_logprobs or 0)
        if tok is not None:
            self.texts[i] = tok.decode(self.tokens[i], skip_special_tokens=self.params.skip_special_tokens)
        stop_at = _find_stop(self.texts[i], self.params.stop)
        if stop_at is not None:
            index, stop = stop_at
            self.texts[i] = self.texts[i][: index + (len(stop) if self.params.include_stop_str_in_output else 0)]
            self.finish[i] = "stop"
            self.handles[i].cancel()
        elif response["finished"]:
            self.finish[i] = _FINISH_REASONS.get(response["finish_reason"], response["finish_reason"])
            self.metrics = {k: response[k] for k in ("time_to_first_token_s", "total_time_s", "num_reused_tokens",
                                                     "num_preemptions") if k in response}

    def _output(self, finished: bool) -> RequestOutput:
        outputs = []
        for i in range(self.params.n):
            lps = self.logprobs[i] if self.params.logprobs is not None else None
            cumulative = None
            if lps is not None:
                cumulative = float(sum(entry[t] for entry, t in zip(lps, self.tokens[i])))
            outputs.append(CompletionOutput(i, self.texts[i], list(self.tokens[i]), self.finish[i], lps, cumulative))
        return RequestOutput(self.prompt_text, self.prompt_ids, outputs, self.prompt_logprobs, finished,
                             dict(self.metrics))


def start_together(runner: ModelRunner, streams: Sequence[GenerationStream],
                   on_response: Callable[[int, int, dict], None] | None = None) -> None:
    """Queue every sample of every stream at once (ExecutorClient.submit_batch): the first step
    sees them all, so the outputs do not depend on thread timing; a bad one queues none. With
    `on_response(stream, sample, response)`, responses go to that callback (router thread)."""
    requests, callbacks = [], []
    for p, stream in enumerate(streams):
        requests += stream.requests()
        callbacks += [None if on_response is None else functools.partial(on_response, p, i)
                      for i in range(stream.params.n)]
    handles = runner.client.submit_batch(requests, callbacks) if requests else []
    for stream in streams:
        stream.handles, handles = handles[:stream.params.n], handles[stream.params.n:]


def _find_stop(text: str, stops: list[str] | None) -> tuple[int, str] | None:
    best = None
    for stop in stops or []:
        index = text.find(stop)
        if index >= 0 and (best is None or index < best[0]):
            best = (index, stop)
    return best


def _prompt_logprobs(context_logits: np.ndarray, prompt: list[int], k: int) -> list[dict[int, float] | None]:
    """Log-probability of each prompt token given the ones before it (the first has none)."""
    logits = context_logits.astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    out: list[dict[int, float] | None] = [None]
    for pos in range(1, len(prompt)):
        row = logp[pos - 1]
        entry = {int(t): float(row[t]) for t in np.argsort(-row)[:k]} if k else {}
        entry[prompt[pos]] = float(row[prompt[pos]])
        out.append(entry)
    return out


__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "GenerationStream"]
