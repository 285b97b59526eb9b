"""CUDA engines are reproducible: the same engine and prompts in two processes give bit-identical
tokens and logits, CUDA graphs on and off. Our kernels sum in a fixed order (no atomics in a sum,
attention's split-K partials merged in split order, the GEMVs' warps added in warp order) and
cuBLASLt runs the algorithm the build recorded, so nothing may vary from run to run; a kernel
that read a buffer before the kernel writing it had finished would.

Engines: bfloat16 tiny Llama (norms, attention, SiLU·mul, the bf16 GEMV and cuBLASLt), fp8 (its
GEMV, the norms' quantized outputs, `quantize`), int8_sq, int4_awq with a quantized lm_head (the
weight-only GEMV, float32 logits; group 32 in the CUDA-core GEMV's layout, group 64 in the mma
tiles), int8_wo. Each run is its own process, as two users' would be. The GEMVs that start while
the kernel before them still runs (programmatic dependent launch, TRTLLM_PDL=0 off) must give the
same bits as plain stream order.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from test_quantization import tiny_llama  # noqa: F401  (fixture)
from trtllm_build.build import BuildConfig, build
from trtllm_build.convert import convert
from trtllm_build.quantization.options import QuantOptions

pytestmark = pytest.mark.gpu
pytest.importorskip("torch")

SCHEMES = {"bf16": None, "fp8": QuantOptions("fp8"), "int8_sq": QuantOptions("int8_sq"),
           "int4_awq_lm_head": QuantOptions("int4_awq", group_size=32, quantize_lm_head=True),
           # group 64 and int8 per channel: every linear in the tensor-core GEMV's mma tiles
           "int4_awq_g64_lm_head": QuantOptions("int4_awq", group_size=64, quantize_lm_head=True),
           "int8_wo": QuantOptions("int8_wo")}
# The engines whose decode GEMVs start while the kernel before them runs (programmatic dependent launch).
EARLY_LAUNCH_SCHEMES = ["bf16", "fp8", "int8_sq", "int4_awq_g64_lm_head", "int8_wo"]

# Greedy on the device (sample_rows_kernel) and with generation logits (host sampler), 24 new tokens.
CHILD = """
import sys
import numpy as np
from trtllm_runtime import ModelRunner
prompts = [[5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11, 54, 90, 2, 33, 71], [7, 2, 90], [33]]
with ModelRunner.from_dir(sys.argv[1]) as runner:
    tokens = runner.generate(prompts, max_new_tokens=24, end_id=-1)
    out = runner.generate(prompts, max_new_tokens=24, end_id=-1, return_dict=True, return_generation_logits=True)
np.savez(sys.argv[2], tokens=np.array([t for row in tokens for t in row]),
         logits=np.concatenate([np.asarray(g, np.float32).ravel() for g in out["generation_logits"]]))
"""


@pytest.fixture(scope="module")
def engines(tiny_llama, tmp_path_factory):  # noqa: F811
    out = {}
    for name, options in SCHEMES.items():
        tmp = tmp_path_factory.mktemp(f"repro_{name}")
        if options is not None:
            options = dataclasses.replace(options, calib_size=4, calib_seq_len=64)
        convert(tiny_llama, tmp / "ckpt", "bfloat16", 1, options)
        out[name] = build(tmp / "ckpt", tmp / "engine", BuildConfig(max_batch_size=4, max_num_tokens=64, target="cuda"))
    return out


def run(engine, out, **env) -> dict[str, np.ndarray]:
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", CHILD, str(engine), str(out)], env=full, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("graphs", ["1", "0"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_engine_is_bit_identical_from_run_to_run(engines, tmp_path, scheme, graphs):
    first, again = (run(engines[scheme], tmp_path / f"{i}.npz", TRTLLM_CUDA_GRAPHS=graphs) for i in range(2))
    assert np.isfinite(first["logits"]).all() and np.abs(first["logits"]).max() > 0
    for key in ("tokens", "logits"):
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)


@pytest.mark.parametrize("scheme", EARLY_LAUNCH_SCHEMES)
def test_early_launched_gemvs_give_the_bits_of_stream_order(engines, tmp_path, scheme):
    early, ordered = (run(engines[scheme], tmp_path / f"{pdl}.npz", TRTLLM_PDL=pdl) for pdl in ("1", "0"))
    assert np.isfinite(early["logits"]).all() and np.abs(early["logits"]).max() > 0
    for key in ("tokens", "logits"):
        np.testing.assert_array_equal(early[key], ordered[key], err_msg=key)
