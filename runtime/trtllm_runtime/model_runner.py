"""ModelRunner: token ids in, token ids out, with TensorRT-LLM's ModelRunner surface."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trtllm_runtime import parallel
from trtllm_runtime.executor import ExecutorClient, ExecutorOptions, RequestHandle, read_engine_dir


class ModelRunner:
    """Runs an engine dir. `generate` takes a batch of prompts (lists of token ids) and returns,
    per request, the generated ids with the prompt excluded.

    Tensor-parallel engines (tp_size > 1, see trtllm_runtime.parallel): under mpirun every rank
    creates its runner and calls `generate`; rank 0 (`is_leader`) returns the outputs, the other
    ranks None, and their `close` returns once rank 0 has closed. From a plain process the
    ranks are started with the MPI launcher and this process drives them (orchestrator mode).
    """

    def __init__(self, engine_dir: Path, config: dict[str, Any], client: ExecutorClient) -> None:
        self.engine_dir = engine_dir
        self.config = config
        self.client = client
        model = config["model_config"]
        self.vocab_size: int = model["vocab_size"]
        eos = model.get("eos_token_id") or []
        self.end_id: int = eos[0] if eos else -1
        self.max_seq_len: int = config["build_config"]["max_seq_len"]
        self.tp_size: int = config["tp_size"]
        self.is_leader: bool = client.is_leader  # False on the follower ranks of an mpirun job

    @classmethod
    def from_dir(cls, engine_dir: str | Path, **options: Any) -> "ModelRunner":
        """Load an engine dir. Keyword options are ExecutorOptions fields (tokens_per_block,
        kv_cache_bytes, free_memory_fraction, enable_prefix_reuse, enable_chunked_context,
        scheduler_policy, max_batch_size, max_num_tokens). A tensor-parallel engine runs as
        described in the class docstring: under mpirun this rank's file, else orchestrator mode."""
        engine_dir = Path(engine_dir)
        known = {f.name for f in dataclasses.fields(ExecutorOptions)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown ModelRunner options {sorted(unknown)}; known: {sorted(known)}")
        executor_options = ExecutorOptions(**options)
        if parallel.launched_by_mpi():
            comm = parallel.world_comm()
            config = parallel.read_rank_config(engine_dir, comm)
            engine_path = engine_dir / config["engine_files"][comm.rank]
            client = ExecutorClient(engine_path, executor_options, comm=comm if comm.size > 1 else None)
        else:
            config = read_engine_dir(engine_dir)
            if config["tp_size"] == 1:
                client = ExecutorClient(engine_dir / config["engine_files"][0], executor_options)
            else:
                remote = parallel.launch_ranks(engine_dir, config["tp_size"], executor_options)
                client = ExecutorClient(None, executor_options, executor=remote)
        return cls(engine_dir, config, client)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ModelRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, input_ids: Sequence[int], *, on_response: Callable[[dict], None] | None = None,
               **options: Any) -> RequestHandle:
        """Queue one request; its handle streams the responses (or, with `on_response`, the
        router thread passes each one to that callback). Options as `request_options`. Rank 0
        only (RuntimeError elsewhere)."""
        return self.client.submit_batch([self.request_options(input_ids, **options)], on_response)[0]

    def request_options(self, input_ids: Sequence[int], *, max_new_tokens: int, end_id: int | None = None,
                        min_new_tokens: int = 0, stop_token_ids: Sequence[int] = (),
                        stop_words: Sequence[Sequence[int]] = (), temperature: float = 0.0, top_k: int = 0,
                        top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                        presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                        random_seed: int | None = None, num_logprobs: int = -1,
                        return_context_logits: bool = False, return_generation_logits: bool = False) -> dict:
        """One request as the executor takes it. end_id None: the model's EOS; -1: never."""
        return dict(
            prompt=[int(t) for t in input_ids], max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            end_id=self.end_id if end_id is None else end_id, stop_token_ids=list(stop_token_ids),
            stop_sequences=[list(s) for s in stop_words], temperature=temperature, top_k=top_k, top_p=top_p,
            min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, seed=random_seed, num_logprobs=num_logprobs,
            return_context_logits=return_context_logits, return_generation_logits=return_generation_logits)

    def generate(self, batch_input_ids: Sequence[Sequence[int]], max_new_tokens: int = 16, *,
                 end_id: int | None = None, pad_id: int | None = None, streaming: bool = False,
                 return_dict: bool = False, **sampling: Any) -> Any:
        """Generate for every prompt of the batch, all in flight together.

        end_id: None uses the model's EOS; -1 never stops early. pad_id is accepted for
        TensorRT-LLM compatibility; outputs are ragged lists, never padded. Sampling keywords as
        `request_options`. Returns a list of generated-id lists, or with return_dict a dict with
        `output_ids`, `finish_reasons`, and `context_logits` / `generation_logits` / `logprobs`
        when asked. With streaming, returns an iterator yielding the lists generated so far
        after each step. On a follower rank of an mpirun job, returns None.
        """
        del pad_id  # outputs are never padded
        if not self.is_leader:
            return None  # rank 0 runs the requests; this rank computes its shard of every iteration
        # All at once: the first step sees the whole batch however fast this thread runs, so the
        # same call gives the same tokens and logits every time (tests/test_cuda_reproducible.py).
        handles = self.client.submit_batch([self.request_options(ids, max_new_tokens=max_new_tokens, end_id=end_id,
                                                                 **sampling) for ids in batch_input_ids])
        if streaming:
            return self._stream(handles)
        outputs = [_collect(h) for h in handles]
        if return_dict:
            return _as_dict(outputs)
        return [o["output_ids"] for o in outputs]

    def _stream(self, handles: list[RequestHandle]) -> Iterator[list[list[int]]]:
        outputs: list[list[int]] = [[] for _ in handles]
        streams = [h.responses() for h in handles]
        done = [False] * len(handles)
        try:
            while not all(done):
                for i, stream in enumerate(streams):
                    if done[i]:
                        continue
                    response = next(stream)
                    _raise_if_failed(response)
                    outputs[i].extend(response["tokens"])
                    done[i] = response["finished"]
                yield [list(o) for o in outputs]
        finally:
            for h, d in zip(handles, done):
                if not d:
                    h.cancel()


def _raise_if_failed(response: dict) -> None:
    if response.get("error"):
        raise RuntimeError(f"request {response['request_id']} failed: {response['error']}")


def _collect(handle: RequestHandle) -> dict[str, Any]:
    out: dict[str, Any] = {"output_ids": [], "logprobs": [], "top_logprobs": [], "generation_logits": []}
    for response in handle.responses():
        _raise_if_failed(response)
        out["output_ids"].extend(response["tokens"])
        out["logprobs"].extend(response.get("logprobs", []))
        out["top_logprobs"].extend(response.get("top_logprobs", []))
        if "generation_logits" in response:
            out["generation_logits"].append(response["generation_logits"])
        if "context_logits" in response:
            out["context_logits"] = response["context_logits"]
        if response["finished"]:
            out["finish_reason"] = response["finish_reason"]
            out["stats"] = {k: response[k] for k in ("time_to_first_token_s", "total_time_s", "num_prompt_tokens",
                                                     "num_generated_tokens", "num_reused_tokens", "num_preemptions")
                            if k in response}
    out["generation_logits"] = (np.concatenate(out["generation_logits"]) if out["generation_logits"] else None)
    return out


def _as_dict(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "output_ids": [o["output_ids"] for o in outputs],
        "finish_reasons": [o.get("finish_reason") for o in outputs],
        "context_logits": [o.get("context_logits") for o in outputs],
        "generation_logits": [o["generation_logits"] for o in outputs],
        "logprobs": [o["logprobs"] for o in outputs],
        "top_logprobs": [o["top_logprobs"] for o in outputs],
        "stats": [o.get("stats") for o in outputs],
    }
