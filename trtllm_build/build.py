"""trtllm-build: checkpoint dir -> engine dir (one engine file per TP rank).

Per rank: load the rank's tensors, trace the DSL model into a graph, run the passes, plan
activation memory, write `rank{N}.engine`. The engine dir also gets `config.json` (build and
model config) and the tokenizer files. The dir appears complete or not at all.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .convert import load_checkpoint
from .engine_writer import write_engine
from .graph.opset import OPSET_VERSION
from .models import trace
from .passes import optimize
from .passes.weight_layout import relayout_weight_only_for_cuda
from .tactics import select_gemm_tactics

log = logging.getLogger(__name__)

TARGETS = ("auto", "cpu", "cuda")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "generation_config.json", "chat_template.jinja")


class BuildError(ValueError):
    """A build option or the checkpoint is invalid; the message names it."""


@dataclass
class BuildConfig:
    max_batch_size: int = 64
    max_num_tokens: int = 4096
    max_seq_len: int = 0        # 0: the model's max_position_embeddings
    target: str = "auto"        # "auto" picks cuda when a GPU is visible
    gather_context_logits: bool = False  # logits of every prompt token (perplexity, prompt logprobs)

    @property
    def max_output_rows(self) -> int:
        """Most logits rows one iteration can return: a row per request, or one per token."""
        return self.max_num_tokens if self.gather_context_logits else self.max_batch_size

    def resolved(self, model: ModelConfig) -> "BuildConfig":
        """Validate against the model and fill defaults; names the bad value and the allowed range."""
        out = dataclasses.replace(self, max_seq_len=self.max_seq_len or model.max_position_embeddings,
                                  target=self.target if self.target != "auto" else _detect_target())
        for name in ("max_batch_size", "max_num_tokens", "max_seq_len"):
            if getattr(out, name) < 1:
                raise BuildError(f"{name} must be >= 1, got {getattr(out, name)}")
        if out.max_num_tokens < out.max_batch_size:
            raise BuildError(f"max_num_tokens ({out.max_num_tokens}) must be >= max_batch_size "
                             f"({out.max_batch_size}): every running request needs a token each iteration")
        if model.position_embedding == "learned" and out.max_seq_len > model.max_position_embeddings:
            raise BuildError(f"max_seq_len {out.max_seq_len} exceeds the model's learned positions "
                             f"({model.max_position_embeddings})")
        if out.target not in ("cpu", "cuda"):
            raise BuildError(f"target {out.target!r} is not one of {TARGETS}")
        return out


def _detect_target() -> str:
    from trtllm_runtime import _core  # the runtime's device query; the builder needs nothing else of it

    return "cuda" if _core.cuda_available() else "cpu"


def _sm_arch(target: str) -> int | None:
    if target != "cuda":
        return None
    from trtllm_runtime import _core

    if not _core.cuda_available():
        raise BuildError("target 'cuda' needs a visible GPU and a CUDA build of trtllm_runtime "
                         "(reinstall with the CUDA toolkit present)")
    return int(_core.cuda_device_sm_arch(0))


CUDA_QUANT_GEMM_ALIGN = 16  # cuBLASLt FP8 / INT8: 16-byte leading dimensions (and our GEMV's 16-byte loads)


def _check_cuda_quantized_gemms(ops: list[dict[str, Any]], weight_shapes: dict[str, tuple[int, ...]]) -> None:
    """The CUDA backend runs fp8_linear / int8_linear with n and k multiples of 16; say so at build time."""
    for op in ops:
        if op["op"] not in ("fp8_linear", "int8_linear"):
            continue
        n, k = weight_shapes[op["weights"]["weight"]]
        if n % CUDA_QUANT_GEMM_ALIGN or k % CUDA_QUANT_GEMM_ALIGN:
            raise BuildError(f"{op['op']} writing {op['outputs'][0]!r} has weight [{n}, {k}]: the cuda target needs "
                             f"n and k multiples of {CUDA_QUANT_GEMM_ALIGN} (cuBLASLt FP8/INT8 alignment); build "
                             "for --target cpu, or convert with a weight-only scheme")


def _check_replaceable(output_dir: Path) -> None:
    """Only an empty dir or an earlier engine dir may be replaced: never delete a user's other files."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise BuildError(f"output dir {output_dir} exists and is not a directory")
    entries = list(output_dir.iterdir())
    if entries and not any(p.suffix == ".engine" for p in entries):
        raise BuildError(f"output dir {output_dir} is not empty and holds no engine; refusing to replace it")


def build_rank(checkpoint_dir: Path, output_dir: Path, rank: int, build: BuildConfig) -> dict[str, Any]:
    """Build and write one rank's engine; returns a summary for logging."""
    t0 = time.perf_counter()
    model, weights = load_checkpoint(checkpoint_dir, rank)
    graph = trace(model, weights)
    traced_nodes = len(graph.nodes)
    graph = optimize(graph, max_num_tokens=build.max_num_tokens, max_output_rows=build.max_output_rows)
    if build.target == "cuda":  # the CUDA weight-only GEMM reads its own weight layout
        graph = relayout_weight_only_for_cuda(graph)
    build_options = {**dataclasses.asdict(build), "tp_rank": rank, "pass_stats": graph.meta["passes"]}
    ops = [node.to_json() for node in graph.nodes]
    weight_shapes = {name: w.shape for name, w in graph.weights.items()}
    if build.target == "cuda":
        _check_cuda_quantized_gemms(ops, weight_shapes)
    sm_arch = _sm_arch(build.target)  # first: a clear error when there is no GPU to tune on
    tactics: dict[str, Any] = {}
    if build.target == "cuda":
        tactics = select_gemm_tactics(ops, graph.meta["memory_plan"], weight_shapes, build.max_num_tokens)
    write_engine(output_dir / f"rank{rank}.engine", target=build.target, sm_arch=sm_arch,
                 opset_version=OPSET_VERSION, build_options=build_options, model_config=model.to_dict(),
                 ops=ops, inputs=graph.inputs, outputs=graph.outputs,
                 memory_plan=graph.meta["memory_plan"], tactics=tactics, weights=graph.weights)
    return {"rank": rank, "traced_nodes": traced_nodes, "engine_ops": len(graph.nodes),
            "arena_bytes": graph.meta["memory_plan"]["arena_bytes"],
            "weight_bytes": sum(w.nbytes for w in graph.weights.values()), "seconds": time.perf_counter() - t0}


def build(checkpoint_dir: Path | str, output_dir: Path | str, config: BuildConfig | None = None,
          workers: int = 1) -> Path:
    """Build every rank of a checkpoint into `output_dir` (replaced atomically if it exists)."""
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    if not checkpoint_dir.is_dir():
        raise BuildError(f"checkpoint dir {checkpoint_dir} does not exist")
    model = ModelConfig.load(checkpoint_dir / "config.json")
    build_config = (config or BuildConfig()).resolved(model)
    if workers < 1:
        raise BuildError(f"workers must be >= 1, got {workers}")
    tp = model.mapping.tp_size
    for rank in range(tp):
        if not (checkpoint_dir / f"rank{rank}.safetensors").is_file():
            raise BuildError(f"checkpoint is missing rank{rank}.safetensors (tp_size {tp})")

    _check_replaceable(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        log.info("building %d rank(s) for target %s with %d worker(s)", tp, build_config.target, workers)
        if workers == 1 or tp == 1:
            results = [build_rank(checkpoint_dir, staging, rank, build_config) for rank in range(tp)]
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, tp)) as pool:
                futures = [pool.submit(build_rank, checkpoint_dir, staging, r, build_config) for r in range(tp)]
                results = [f.result() for f in futures]
        for r in results:
            log.info("rank %d: %d traced nodes -> %d engine ops, arena %.1f MiB, weights %.1f MiB, %.1f s",
                     r["rank"], r["traced_nodes"], r["engine_ops"], r["arena_bytes"] / 2**20,
                     r["weight_bytes"] / 2**20, r["seconds"])
        for name in TOKENIZER_FILES:
            if (checkpoint_dir / name).is_file():
                shutil.copy2(checkpoint_dir / name, staging / name)
        engine_config = {"build_config": dataclasses.asdict(build_config), "model_config": model.to_dict(),
                         "opset_version": OPSET_VERSION, "tp_size": tp,
                         "engine_files": [f"rank{r}.engine" for r in range(tp)]}
        (staging / "config.json").write_text(json.dumps(engine_config, indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir
