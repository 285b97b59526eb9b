"""Triton Python backend model `tensorrt_llm`: drives the trtllm executor (in-flight batching,
paged KV cache) and streams its tokens back through Triton's decoupled response sender.

execute() only validates and submits: it returns at once, and the executor's response router
thread sends each request's responses as tokens come (no thread per request, no waiting in
execute), so every request Triton hands over joins the in-flight batch. A request gets its
last response flagged TRITONSERVER_RESPONSE_COMPLETE_FINAL; a client that cancels (Triton's
request cancellation) has its executor request cancelled, which returns its KV blocks.

Parameters (config.pbtxt, TensorRT-LLM's names): gpt_model_path (the engine dir),
gpt_model_type (inflight_fused_batching), batch_scheduler_policy (max_utilization |
guaranteed_no_evict), kv_cache_free_gpu_mem_fraction, enable_kv_cache_reuse,
enable_chunked_context, max_beam_width (1), exclude_input_in_output.

Sampling as in TensorRT-LLM: without temperature, runtime_top_k or runtime_top_p decoding is
greedy; runtime_top_k / runtime_top_p 0 mean off; temperature 0 is greedy.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from trtllm_runtime import ModelRunner, triton_params

_BATCHING_TYPES = ("inflight_fused_batching", "inflight_batching")


def _flag(params: dict[str, str], key: str, default: bool) -> bool:
    return triton_params.flag(params, key, default, pb_utils.TritonModelException)


def _input(request: Any, name: str) -> np.ndarray | None:
    """The request's tensor without its batch dim; a request carries one prompt."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    if array.shape[0] != 1:
        raise ValueError(f"{name} has batch size {array.shape[0]}: send one prompt per request "
                         f"(the executor batches requests in flight)")
    return array[0]


def _scalar(request: Any, name: str, default: Any) -> Any:
    array = _input(request, name)
    return default if array is None else array.reshape(-1)[0].item()


def _words(request: Any, name: str) -> list[list[int]]:
    """TensorRT-LLM's word list [2, L]: flat ids, then end offsets padded with -1."""
    array = _input(request, name)
    if array is None or array.size == 0:
        return []
    ids, offsets = array[0].tolist(), [int(o) for o in array[1] if o >= 0]
    return [ids[start:end] for start, end in zip([0] + offsets, offsets) if end > start]


class _Stream:
    """One request's responses, sent from the executor's router thread as they arrive."""

    def __init__(self, model: "TritonPythonModel", sender: Any, prompt: list[int], streaming: bool,
                 return_log_probs: bool) -> None:
        self.model, self.sender, self.prompt = model, sender, prompt
        self.streaming, self.return_log_probs = streaming, return_log_probs
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.cancelled = False

    def on_response(self, response: dict) -> None:
        final = response["finished"]
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if response.get("error"):
            self._send_error(f"request failed: {response['error']}")
            return
        if not final and not self.cancelled and self.sender.is_cancelled():
            # The client gave up: stop generating (KV blocks return); the final flag follows.
            self.cancelled = True
            self.model.runner.client.cancel(response["request_id"])
        new = list(response["tokens"])
        self.tokens += new
        self.logprobs += list(response.get("logprobs", []))
        if self.cancelled:
            if final:
                self.sender.send(flags=flags)
        elif self.streaming:
            if new:
                self.sender.send(self._response(new, self.logprobs[len(self.logprobs) - len(new):]), flags=flags)
            elif final:
                self.sender.send(flags=flags)
        elif final:
            output = self.tokens if self.model.exclude_input_in_output else self.prompt + self.tokens
            self.sender.send(self._response(output, self.logprobs), flags=flags)

    def _response(self, ids: list[int], logprobs: list[float]) -> Any:
        # [batch 1, beam 1, tokens]; log probs are zeros unless asked for, as in TensorRT-LLM;
        # cum_log_probs covers every token generated so far, also when streaming.
        lp = np.asarray(logprobs if self.return_log_probs else [0.0] * len(ids), np.float32)
        lp = np.pad(lp, (len(ids) - len(lp), 0))  # no log probs for echoed prompt tokens
        cumulative = float(np.sum(self.logprobs)) if self.return_log_probs else 0.0
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("output_ids", np.asarray(ids, np.int32).reshape(1, 1, -1)),
            pb_utils.Tensor("sequence_length", np.asarray([[len(ids)]], np.int32)),
            pb_utils.Tensor("cum_log_probs", np.asarray([[cumulative]], np.float32)),
            pb_utils.Tensor("output_log_probs", lp.reshape(1, 1, -1)),
        ])

    def _send_error(self, message: str) -> None:
        self.sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)),
                         flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException(
                "tensorrt_llm streams through the decoupled response sender: set "
                "model_transaction_policy { decoupled: true } in config.pbtxt")
        params = triton_params.parameters(model_config, pb_utils.TritonModelException)
        if params.get("gpt_model_type", _BATCHING_TYPES[0]) not in _BATCHING_TYPES:
            raise pb_utils.TritonModelException(
                f"gpt_model_type must be one of {_BATCHING_TYPES} (this runtime always batches in flight), "
                f"got {params['gpt_model_type']!r}")
        if params.get("max_beam_width", "1") != "1":
            raise pb_utils.TritonModelException(f"max_beam_width must be 1, got {params['max_beam_width']}")
        if "gpt_model_path" not in params:
            raise pb_utils.TritonModelException("parameter gpt_model_path (the engine dir) is missing")
        self.exclude_input_in_output = _flag(params, "exclude_input_in_output", False)
        try:
            self.runner = ModelRunner.from_dir(
                params["gpt_model_path"],
                scheduler_policy=params.get("batch_scheduler_policy", "max_utilization"),
                free_memory_fraction=float(params.get("kv_cache_free_gpu_mem_fraction", "0.5")),
                enable_prefix_reuse=_flag(params, "enable_kv_cache_reuse", True),
                enable_chunked_context=_flag(params, "enable_chunked_context", True))
        except ValueError as e:  # EngineDirError, bad option values
            raise pb_utils.TritonModelException(f"cannot load {params['gpt_model_path']}: {e}") from None
        pb_utils.Logger.log_info(f"tensorrt_llm: serving {params['gpt_model_path']} with in-flight batching")

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._submit(request, sender)
            except ValueError as e:  # bad inputs: this request fails, the others go on
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None  # decoupled: responses go through the senders

    def _submit(self, request: Any, sender: Any) -> None:
        ids = _input(request, "input_ids")
        if ids is None:
            raise ValueError("input_ids is required")
        length = _scalar(request, "input_lengths", ids.shape[-1])
        if not 0 < length <= ids.shape[-1]:
            raise ValueError(f"input_lengths {length} must be in [1, {ids.shape[-1]}] (the input_ids length)")
        prompt = ids.reshape(-1)[:length].tolist()
        if _scalar(request, "beam_width", 1) != 1:
            raise ValueError("beam_width must be 1 (beam search is not supported)")
        if _words(request, "bad_words_list"):
            raise ValueError("bad_words_list is not supported")
        output_len = _scalar(request, "request_output_len", None)
        if output_len is None:
            raise ValueError("request_output_len is required")
        stream = _Stream(self, sender, prompt, bool(_scalar(request, "streaming", False)),
                         bool(_scalar(request, "return_log_probs", False)))
        top_k, top_p = _scalar(request, "runtime_top_k", 0), _scalar(request, "runtime_top_p", 0.0)
        temperature = _scalar(request, "temperature", 1.0 if top_k or top_p else 0.0)
        self.runner.submit(
            prompt, max_new_tokens=output_len, end_id=_scalar(request, "end_id", None),
            min_new_tokens=_scalar(request, "min_tokens", 0), stop_words=_words(request, "stop_words_list"),
            temperature=temperature, top_k=top_k, top_p=top_p or 1.0, min_p=_scalar(request, "runtime_min_p", 0.0),
            repetition_penalty=_scalar(request, "repetition_penalty", 1.0),
            presence_penalty=_scalar(request, "presence_penalty", 0.0),
            frequency_penalty=_scalar(request, "frequency_penalty", 0.0),
            random_seed=_scalar(request, "random_seed", None), num_logprobs=0 if stream.return_log_probs else -1,
            on_response=stream.on_response)

    def finalize(self) -> None:
        """Triton unloads the model: requests still running end as cancelled."""
        self.runner.close()
