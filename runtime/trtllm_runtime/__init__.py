"""trtllm_runtime: loads engines built by trtllm_build and runs them (no torch needed)."""

import os

# Idle OpenMP threads sleep instead of spinning: between kernels the executor thread schedules
# and samples, and spinning workers would steal its core (3x slower on a shared 2-core machine).
# Set OMP_WAIT_POLICY=active before importing to trade that for lower kernel launch latency.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trtllm_runtime._core import EngineFormatError
from trtllm_runtime.engine import Engine
from trtllm_runtime.executor import EngineDirError, ExecutorOptions
from trtllm_runtime.llm import LLM, CompletionOutput, RequestOutput, SamplingParams
from trtllm_runtime.model_runner import ModelRunner

__all__ = ["Engine", "EngineFormatError", "EngineDirError", "ExecutorOptions", "ModelRunner", "LLM",
           "SamplingParams", "RequestOutput", "CompletionOutput"]
