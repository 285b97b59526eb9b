"""Quantized engines on the CUDA backend against the same checkpoint built for the CPU backend:
a tiny bfloat16 Llama with int8 weight-only, int4 AWQ (group 32) and the FP8 KV cache.

Both backends run the op set's quantized math (same dequantized weights, same FP8 codes, float32
sums in different orders), so the logits agree to bfloat16 rounding compounded over the layers:
within 3% of the logit scale (a bound from the bf16 rounding flips, not yet measured on a GPU), and greedy
tokens are identical for 16 new tokens unless the first difference is a near tie in the CPU's
logits (top-2 gap within 1% of the logit scale), as in test_cuda_runtime.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_quantization import tiny_llama  # noqa: F401  (fixture)
from trtllm_build.build import BuildConfig, build
from trtllm_build.convert import convert
from trtllm_build.quantization.options import QuantOptions
from trtllm_runtime import Engine, ModelRunner, _core

pytestmark = pytest.mark.gpu

PROMPTS = [[5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11, 54, 90, 2, 33, 71], [7, 2, 90], [33]]
NEW_TOKENS = 16
SCHEMES = {"int8_wo": QuantOptions("int8_wo"), "int4_awq": QuantOptions("int4_awq", group_size=32),
           "kv_fp8": QuantOptions(None, kv_cache="fp8")}


def generate(engine):
    with ModelRunner.from_dir(engine) as runner:
        return runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                               return_context_logits=True, return_generation_logits=True)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantized_engine_on_gpu_matches_cpu_engine(tiny_llama, tmp_path, scheme):  # noqa: F811
    options = dataclasses.replace(SCHEMES[scheme], calib_size=4, calib_seq_len=64)
    convert(tiny_llama, tmp_path / "ckpt", "bfloat16", 1, options)
    engines = {target: build(tmp_path / "ckpt", tmp_path / target,
                             BuildConfig(max_batch_size=4, max_num_tokens=64, target=target,
                                         gather_context_logits=True))
               for target in ("cpu", "cuda")}
    if SCHEMES[scheme].scheme is not None:  # weight-only linears: the CUDA layout and a timed path per bucket
        engine = Engine.open(engines["cuda"] / "rank0.engine", expected_target="cuda",
                             sm_arch=_core.cuda_device_sm_arch())
        layouts = {op["attrs"]["weight_layout"] for op in engine.ops if op["op"] == "weight_only_linear"}
        assert layouts == {"cuda_k_interleaved_v1"}
        shapes = engine.tactics["weight_only"]["shapes"]
        assert len(shapes) == 4 and all(e["path"] in ("gemv", "dequant_gemm") for v in shapes.values() for e in v.values())
    cpu, gpu = generate(engines["cpu"]), generate(engines["cuda"])
    for i in range(len(PROMPTS)):
        scale = np.abs(cpu["context_logits"][i]).max()
        assert np.abs(gpu["context_logits"][i] - cpu["context_logits"][i]).max() <= 3e-2 * scale, f"prompt {i}"
        assert np.abs(gpu["generation_logits"][i][0] - cpu["generation_logits"][i][0]).max() <= 3e-2 * scale
        ours, theirs = gpu["output_ids"][i], cpu["output_ids"][i]
        j = next((j for j in range(NEW_TOKENS) if ours[j] != theirs[j]), None)
        if j is not None:
            logits = np.asarray(cpu["generation_logits"][i][j])
            gap = abs(logits[theirs[j]] - logits[ours[j]])
            assert gap <= 1e-2 * np.abs(logits).max(), f"prompt {i}: token {j} differs, not a near tie (gap {gap:.3g})"

