"""trtllm_runtime: loads engines built by trtllm_build and runs them (no torch needed)."""

from trtllm_runtime._core import EngineFormatError
from trtllm_runtime.engine import Engine

__all__ = ["Engine", "EngineFormatError"]
