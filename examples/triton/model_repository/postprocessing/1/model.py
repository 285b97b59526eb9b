"""Triton Python backend model `postprocessing`: token ids [batch, beam, tokens] -> text per beam,
with the engine dir's tokenizer (HF `tokenizers`, no torch)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from trtllm_runtime import triton_params


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = triton_params.parameters(json.loads(args["model_config"]), pb_utils.TritonModelException)
        self.tokenizer, _ = triton_params.tokenizer(params, pb_utils.TritonModelException)
        self.skip_special_tokens = triton_params.flag(params, "skip_special_tokens", True,
                                                      pb_utils.TritonModelException)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            texts = [[self.tokenizer.decode(beam[:n].tolist(), skip_special_tokens=self.skip_special_tokens).encode()
                      for beam, n in zip(beams, beam_lengths)] for beams, beam_lengths in zip(tokens, lengths)]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT", np.array(texts, dtype=np.object_))]))
        return responses
