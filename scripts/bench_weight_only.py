#!/usr/bin/env python3
"""Weight-only and FP8 GEMV vs the bf16 GEMM at decode sizes on the Llama-3.1-8B shapes (GPU 0).

    python scripts/bench_weight_only.py [--m 1] [--reps 200] [--tp 2]

Per layer shape: the bf16 GEMM's best build-time tactic (cuBLASLt or our GEMV), and the weight-only
GEMV (m <= 16; the dequantize + cuBLASLt path past that): int8 weight-only
(per channel), int4 per channel and int4 AWQ (group 128, with a pre_quant_scale as o_proj / down_proj
have; each in the layout the builder picks for the shape, the mma tiles for these), int8 again in
the interleaved layout (the CUDA-core GEMV, "int8 il"), and the
FP8 GEMM of fp8_linear (its best build-time tactic: our FP8 GEMV or cuBLASLt), in
microseconds and in GB/s of weight + scale bytes read (the DRAM traffic that bounds decode).
--tp N takes one rank's shapes under tensor parallelism (qkv and gate_up split along n, o and down
along k). Each kernel runs `reps` times back to back on copies of its weight cycled past twice the
L2 (`ColdWeights`, as the builder times tactics), so every call reads its weight from DRAM as a
model's layers do; Nsight Compute with --cache-control all (scripts/gpu_check.sh ncu) times each
launch alone.
"""

from __future__ import annotations

import argparse

from trtllm_build.passes.weight_layout import CUDA_WEIGHT_LAYOUT, cuda_layout_for
from trtllm_runtime import _core

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--tp", type=int, default=1, help="one rank's shapes at this tensor-parallel size")
    args = p.parse_args()
    column_parallel = {"qkv", "gate_up"}  # split along n; the others (row parallel) along k
    shapes = {name: (n // args.tp, k) if name in column_parallel else (n, k // args.tp)
              for name, (n, k) in SHAPES.items()}
    total = {"bf16": 0.0, "int8_wo": 0.0, "int4_wo": 0.0, "int4_awq": 0.0, "int8_il": 0.0, "fp8": 0.0}
    print(f"{'layer':8} {'n x k':>12} | {'bf16 us':>8} {'GB/s':>6} | {'int8 us':>8} {'GB/s':>6} | "
          f"{'int4 us':>8} {'GB/s':>6} | {'awq us':>8} {'GB/s':>6} | {'int8 il':>8} {'GB/s':>6} | "
          f"{'fp8 us':>8} {'GB/s':>6}")
    for name, (n, k) in shapes.items():
        tuned = _core.cuda_autotune_gemm(n, k, "bfloat16", "bfloat16", False, [args.m], 16, args.reps)[0]
        runs = {"bf16": (tuned["best_us"], 2 * n * k)}
        for label, bits, group, pre in (("int8_wo", 8, k, False), ("int4_wo", 4, k, False),
                                        ("int4_awq", 4, 128, True), ("int8_il", 8, k, False)):
            layout = CUDA_WEIGHT_LAYOUT if label == "int8_il" else cuda_layout_for(bits, n, k, group)
            tuned_wo = _core.cuda_autotune_weight_only(n, k, "bfloat16", bits, group, pre, False, [args.m], args.reps,
                                                       weight_layout=layout)[0]
            us = tuned_wo["gemv_us"] or tuned_wo["dequant_us"]
            runs[label] = (us, n * k * bits // 8 + 2 * n * (k // group))
        fp8 = _core.cuda_autotune_gemm(n, k, "float8_e4m3fn", "bfloat16", False, [args.m], 16, args.reps)[0]
        runs["fp8"] = (fp8["best_us"], n * k)
        cells = []
        for label, (us, nbytes) in runs.items():
            total[label] += us
            cells.append(f"{us:8.1f} {nbytes / us / 1e3:6.0f}")
        print(f"{name:8} {f'{n}x{k}':>12} | " + " | ".join(cells))
    print("per layer (us): " + ", ".join(f"{k} {v:.1f}" for k, v in total.items()) +
          f"; speedup vs bf16: int8 {total['bf16'] / total['int8_wo']:.2f}x "
          f"(interleaved {total['bf16'] / total['int8_il']:.2f}x), "
          f"int4 {total['bf16'] / total['int4_wo']:.2f}x, awq {total['bf16'] / total['int4_awq']:.2f}x, "
          f"fp8 {total['bf16'] / total['fp8']:.2f}x")


if __name__ == "__main__":
    main()
