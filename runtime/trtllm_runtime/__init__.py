"""trtllm_runtime: loads engines built by trtllm_build and runs them (no torch needed)."""

from trtllm_runtime._core import EngineFormatError
from trtllm_runtime.engine import Engine
from trtllm_runtime.executor import EngineDirError, ExecutorOptions
from trtllm_runtime.llm import LLM, CompletionOutput, RequestOutput, SamplingParams
from trtllm_runtime.model_runner import ModelRunner

__all__ = ["Engine", "EngineFormatError", "EngineDirError", "ExecutorOptions", "ModelRunner", "LLM",
           "SamplingParams", "RequestOutput", "CompletionOutput"]
