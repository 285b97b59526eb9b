"""Build-time tactic selection for the CUDA target: time cuBLASLt's GEMM algorithms on this GPU.

For every distinct GEMM shape of the engine (`linear`, `fp8_linear`, `int8_linear`: n, k, input
dtype, output dtype, bias) and a few m buckets (1, 4, 8, 16, 32, 64, 128, 512 and max_num_tokens,
capped at max_num_tokens), the runtime's `_core.cuda_autotune_gemm` times up to 16 candidate
algorithms that cuBLASLt's heuristic offers, and for m <= 4 our GEMV kernel (bf16/fp16, fp8 or
int8 inputs), and keeps the fastest ("gemv" or the cuBLASLt algorithm in hex). A quantized
shape's input dtype is float8_e4m3fn or int8 (its key says so); int8 timings include the int32 ->
output epilogue. The result goes into the engine's `tactics`:

    {"gemm": {"cublaslt_version": 130002, "buckets": [1, 8, ...],
              "shapes": {"2048x4096:bfloat16:bfloat16:nobias": {"1": {"algo": "<128 hex digits>",
                                                                    "us": 5.1, "default_us": 6.0}, ...}}}}

Every `weight_only_linear` shape (n, k, weight_bits, group_size, dtype, pre_quant_scale, bias, and
the output dtype where it is not the activation dtype: a quantized lm_head's float32) gets the
faster of its two CUDA paths per bucket, timed by `_core.cuda_autotune_weight_only`:

    {"weight_only": {"buckets": [...], "shapes": {"4096x14336:int4:g128:bfloat16:pre:nobias":
        {"1": {"path": "gemv", "gemv_us": 9.8, "dequant_us": 80.1}, ...},
        "128256x4096:int4:g128:bfloat16:nopre:nobias:out_float32": {...}}}}

The runtime runs an m with the algorithm of the smallest bucket >= m (when cuBLASLt accepts it
for that m). An algorithm is opaque outside the cuBLASLt version that chose it, so the version is
recorded and a runtime with another version uses cuBLASLt's heuristic instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

# The runtime takes the tactic of the smallest bucket >= m. 16 / 128: the weight-only GEMV's last
# size (interleaved / tile layout); 64: the int4 tile GEMV beats dequantize + cuBLASLt at 33-64 rows
# of the 8B shapes but not at 128 (H100, docs/cuda_backend.md "Session 14").
M_BUCKETS = (1, 4, 8, 16, 32, 64, 128, 512)
GEMM_OPS = ("linear", "fp8_linear", "int8_linear")  # the ops CublasLtGemm runs, keyed alike


def gemm_buckets(max_num_tokens: int) -> list[int]:
    return sorted({m for m in M_BUCKETS if m <= max_num_tokens} | {max_num_tokens})


def gemm_shapes(ops: list[dict[str, Any]], memory_plan: dict[str, Any],
                weight_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int, str, str, bool]]:
    """shape key -> (n, k, dtype, out_dtype, has_bias) of every GEMM op, keyed as the runtime keys them
    (dtype: the input's, float8_e4m3fn / int8 for the quantized linears)."""
    tensors = memory_plan["tensors"]
    shapes = {}
    for op in ops:
        if op["op"] not in GEMM_OPS:
            continue
        n, k = weight_shapes[op["weights"]["weight"]]
        dtype, out_dtype = tensors[op["inputs"][0]]["dtype"], tensors[op["outputs"][0]]["dtype"]
        has_bias = "bias" in op["weights"]
        key = f"{n}x{k}:{dtype}:{out_dtype}:{'bias' if has_bias else 'nobias'}"
        shapes[key] = (int(n), int(k), dtype, out_dtype, has_bias)
    return shapes


def weight_only_shapes(ops: list[dict[str, Any]], memory_plan: dict[str, Any],
                       weight_shapes: dict[str, tuple[int, ...]]
                       ) -> dict[str, tuple[int, int, int, int, str, bool, bool, str, str]]:
    """shape key -> (n, k, weight_bits, group_size, dtype, has_pre_quant_scale, has_bias, out_dtype,
    weight_layout) of every `weight_only_linear` op, keyed as the runtime keys them (the layout follows
    from the shape, so it is not part of the key)."""
    tensors = memory_plan["tensors"]
    shapes = {}
    for op in ops:
        if op["op"] != "weight_only_linear":
            continue
        bits, group = int(op["attrs"]["weight_bits"]), int(op["attrs"]["group_size"])
        n, packed_k = weight_shapes[op["weights"]["weight"]]
        k = packed_k * (2 if bits == 4 else 1)
        dtype, out_dtype = tensors[op["inputs"][0]]["dtype"], tensors[op["outputs"][0]]["dtype"]
        pre, bias = "pre_quant_scale" in op["weights"], "bias" in op["weights"]
        key = f"{n}x{k}:int{bits}:g{group}:{dtype}:{'pre' if pre else 'nopre'}:{'bias' if bias else 'nobias'}"
        if out_dtype != dtype:
            key += f":out_{out_dtype}"
        shapes[key] = (int(n), int(k), bits, group, dtype, pre, bias, out_dtype, op["attrs"]["weight_layout"])
    return shapes


def _select_weight_only_tactics(wo_shapes: dict[str, tuple[int, int, int, int, str, bool, bool, str, str]],
                                buckets: list[int]) -> dict[str, Any]:
    from trtllm_runtime import _core

    shapes: dict[str, Any] = {}
    for key, (n, k, bits, group, dtype, pre, bias, out_dtype, layout) in wo_shapes.items():
        tuned = _core.cuda_autotune_weight_only(n, k, dtype, bits, group, pre, bias, buckets, out_dtype=out_dtype,
                                                weight_layout=layout)
        shapes[key] = {str(t["m"]): {"path": t["path"], "gemv_us": round(t["gemv_us"], 2),
                                     "dequant_us": round(t["dequant_us"], 2)} for t in tuned}
        log.info("weight-only tactics %s: %s", key,
                 ", ".join(f"m={t['m']}: {t['path']} {min(x for x in (t['gemv_us'], t['dequant_us']) if x > 0):.1f} us"
                           for t in tuned))
    return {"buckets": buckets, "shapes": shapes}


def select_gemm_tactics(ops: list[dict[str, Any]], memory_plan: dict[str, Any],
                        weight_shapes: dict[str, tuple[int, ...]], max_num_tokens: int) -> dict[str, Any]:
    """Time every GEMM shape of the engine on GPU 0; returns the engine's `tactics` object."""
    from trtllm_runtime import _core  # the runtime's device code; the builder needs nothing else of it

    buckets = gemm_buckets(max_num_tokens)
    shapes: dict[str, Any] = {}
    t0 = time.perf_counter()
    for key, (n, k, dtype, out_dtype, has_bias) in gemm_shapes(ops, memory_plan, weight_shapes).items():
        tuned = _core.cuda_autotune_gemm(n, k, dtype, out_dtype, has_bias, buckets)
        shapes[key] = {str(t["m"]): {"algo": t["algo"], "us": round(t["best_us"], 2),
                                     "default_us": round(t["default_us"], 2)} for t in tuned}
        gain = sum(t["default_us"] for t in tuned) / max(1e-9, sum(t["best_us"] for t in tuned))
        log.info("tactics %s: %s us (heuristic's first choice %.2fx slower)", key,
                 ", ".join(f"m={t['m']}: {t['best_us']:.1f}" for t in tuned), gain)
    log.info("GEMM tactic selection: %d shapes x %d m buckets in %.1f s", len(shapes), len(buckets),
             time.perf_counter() - t0)
    tactics = {"gemm": {"cublaslt_version": int(_core.cublaslt_version()), "buckets": buckets, "shapes": shapes}}
    wo_shapes = weight_only_shapes(ops, memory_plan, weight_shapes)
    if wo_shapes:
        tactics["weight_only"] = _select_weight_only_tactics(wo_shapes, buckets)
    return tactics
