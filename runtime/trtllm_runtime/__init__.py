"""trtllm_runtime: loads engines built by trtllm_build and runs them (no torch needed)."""

import os

# Idle OpenMP threads sleep instead of spinning: between kernels the executor thread schedules
# and samples, and spinning workers would steal its core (3x slower on a shared 2-core machine).
# Set OMP_WAIT_POLICY=active before importing to trade that for lower kernel launch latency.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ranks that an MPI launcher put on one machine split its cores, unless OMP_NUM_THREADS says otherwise:
# one OpenMP pool per rank, each as wide as the machine, would oversubscribe it N times.
_local_ranks = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS")
if _local_ranks and int(_local_ranks) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // int(_local_ranks))))

from trtllm_runtime._core import EngineFormatError
from trtllm_runtime.engine import Engine
from trtllm_runtime.executor import EngineDirError, ExecutorOptions
from trtllm_runtime.llm import LLM, CompletionOutput, RequestOutput, SamplingParams
from trtllm_runtime.model_runner import ModelRunner

__all__ = ["Engine", "EngineFormatError", "EngineDirError", "ExecutorOptions", "ModelRunner", "LLM",
           "SamplingParams", "RequestOutput", "CompletionOutput"]
