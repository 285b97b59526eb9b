"""Triton Python backend model `preprocessing`: prompt text -> token ids, stop words -> the
[2, L] word list (flat ids; end offsets padded with -1) that `tensorrt_llm` reads.

Uses the engine dir's tokenizer through trtllm_runtime's Tokenizer (HF `tokenizers`, no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from trtllm_runtime import triton_params


def _engine_eos(directory: Path) -> int:
    """The engine's end id (pads INPUT_ID and is OUT_END_ID's default); -1 when unknown."""
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    eos = config.get("model_config", {}).get("eos_token_id") or [-1]
    return int(eos[0])


def _strings(array: np.ndarray) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in array.reshape(-1)]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = triton_params.parameters(json.loads(args["model_config"]), pb_utils.TritonModelException)
        self.tokenizer, tokenizer_dir = triton_params.tokenizer(params, pb_utils.TritonModelException)
        self.add_special_tokens = triton_params.flag(params, "add_special_tokens", True, pb_utils.TritonModelException)
        self.end_id = _engine_eos(tokenizer_dir)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._preprocess(request))
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses

    def _preprocess(self, request: Any) -> Any:
        queries = _strings(pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy())
        batch = len(queries)
        ids = [self.tokenizer.encode(q, add_special_tokens=self.add_special_tokens) for q in queries]
        if any(not i for i in ids):
            raise ValueError("QUERY tokenizes to no tokens")
        end_id = self._optional(request, "END_ID", self.end_id, batch)
        pad_id = self._optional(request, "PAD_ID", end_id[0, 0], batch)
        width = max(len(i) for i in ids)
        input_id = np.stack([np.pad(np.asarray(i, np.int32), (0, width - len(i)), constant_values=pad_id[b, 0])
                             for b, i in enumerate(ids)])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("INPUT_ID", input_id),
            pb_utils.Tensor("REQUEST_INPUT_LEN", np.asarray([[len(i)] for i in ids], np.int32)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN",
                            pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy()),
            pb_utils.Tensor("STOP_WORDS_IDS", self._word_list(request, "STOP_WORDS_DICT", batch)),
            pb_utils.Tensor("BAD_WORDS_IDS", self._word_list(request, "BAD_WORDS_DICT", batch)),
            pb_utils.Tensor("OUT_END_ID", end_id),
            pb_utils.Tensor("OUT_PAD_ID", pad_id),
        ])

    @staticmethod
    def _optional(request: Any, name: str, default: int, batch: int) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            return tensor.as_numpy().astype(np.int32).reshape(batch, 1)
        return np.full((batch, 1), default, np.int32)

    def _word_list(self, request: Any, name: str, batch: int) -> np.ndarray:
        """[batch, 2, L]: per row, the words' ids back to back, then each word's end offset (-1 pads)."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        rows = [_strings(r) if tensor is not None else [] for r in
                (tensor.as_numpy() if tensor is not None else [None] * batch)]
        flat, offsets = [], []
        for words in rows:
            ids: list[int] = []
            ends: list[int] = []
            for word in words:
                if word:
                    ids += self.tokenizer.encode(word, add_special_tokens=False)
                    ends.append(len(ids))
            flat.append(ids)
            offsets.append(ends)
        width = max(1, max(len(f) for f in flat))
        out = np.zeros((batch, 2, width), np.int32)
        out[:, 1, :] = -1
        for b, (ids, ends) in enumerate(zip(flat, offsets)):
            out[b, 0, :len(ids)] = ids
            out[b, 1, :len(ends)] = ends
        return out
