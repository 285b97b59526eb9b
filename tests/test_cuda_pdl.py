"""Programmatic dependent launch and the GEMVs' L2 prefetch (plugins/cuda_common.cuh) change when
kernels start, never what they compute: with them on, an engine's tokens and logits are
bit-identical to plain stream order (TRTLLM_PDL=0 TRTLLM_L2_PREFETCH=0), CUDA graphs on and off.
A kernel that read its input before waiting for the kernel writing it, or wrote a buffer the
previous kernel still reads, would show here as different bits.

Engines: bfloat16 tiny Llama (norms, attention, SiLU·mul and the bf16 GEMV), fp8 (its GEMV, the
norms' quantized outputs and `quantize`), int8_sq, int4_awq with a quantized lm_head (the
weight-only GEMV, float32 logits). The settings are read once per process: each runs in its own.
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
           "int4_awq_lm_head": QuantOptions("int4_awq", group_size=32, quantize_lm_head=True)}

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
        tmp = tmp_path_factory.mktemp(f"pdl_{name}")
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


STREAM_ORDER = {"TRTLLM_PDL": "0", "TRTLLM_L2_PREFETCH": "0"}
EARLY_LAUNCH = {"TRTLLM_PDL": "1", "TRTLLM_L2_PREFETCH": "1"}


@pytest.mark.parametrize("graphs", ["1", "0"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_programmatic_launch_is_bit_identical_to_stream_order(engines, tmp_path, scheme, graphs):
    # Stream order twice first: a difference there is run-to-run nondeterminism, not the launch.
    first, again, early = (run(engines[scheme], tmp_path / f"{i}.npz", TRTLLM_CUDA_GRAPHS=graphs, **env)
                           for i, env in enumerate((STREAM_ORDER, STREAM_ORDER, EARLY_LAUNCH)))
    assert np.isfinite(first["logits"]).all() and np.abs(first["logits"]).max() > 0
    for key in ("tokens", "logits"):
        np.testing.assert_array_equal(again[key], first[key], err_msg=f"{key}: stream order, run to run")
        np.testing.assert_array_equal(early[key], first[key], err_msg=f"{key}: early launch vs stream order")
