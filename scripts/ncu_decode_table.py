#!/usr/bin/env python3
"""Where a decode step's device time goes, by kind of kernel, from the CSV that
`scripts/gpu_check.sh ncu` writes of about two batch-1 decode steps (`ncu_decode_8b.csv`: every
kernel alone, caches flushed, CUDA graphs off).

    python scripts/ncu_decode_table.py ncu_decode_8b.csv [--steps N]

Prints, per kind (sampling, attention, all-reduce, norms, SiLU·mul, quantize, GEMMs and GEMVs, the rest), the
kernels per step and their time per step (us), over the whole steps of the profile (each ends
with the sampling kernel); --steps N takes every kernel as N steps instead. The sum is the step's kernel time with no launch gaps: set against the
CUDA-graph forward time of `trtllm-bench latency` it bounds what the gaps between kernels cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncu_gemv_table import kernels

# First match wins: (kind, substrings of the kernel's name).
KINDS = (
    ("sampling", ("sample_rows",)),
    ("attention", ("decode_kernel", "prefill", "qkv_prep")),
    ("all_reduce", ("all_reduce", "nccl")),  # before norm: the fused all-reduce + residual norm is one
    ("norm", ("norm",)),
    ("silu_mul", ("silu_mul",)),
    ("quantize", ("quantize_kernel",)),
    ("gemm", ("gemv", "gemm", "xmma", "cutlass", "int8_epilogue", "sm90_", "sm80_")),
)


def kind_of(name: str) -> str:
    return next((kind for kind, keys in KINDS if any(k in name for k in keys)), "other")


def step_table(found: list[tuple[str, float]], steps: int | None = None) -> tuple[int, dict[str, tuple[float, float]]]:
    """(steps, kind -> (kernels per step, us per step)), kinds in KINDS order, then "other"."""
    if steps is None:  # whole steps only: from after one sampling kernel to the next one, inclusive
        ends = [i for i, (name, _) in enumerate(found) if kind_of(name) == "sampling"]
        if len(ends) < 2:
            raise ValueError(f"{len(ends)} sampling kernels, too few to mark a whole step: pass --steps")
        found, steps = found[ends[0] + 1:ends[-1] + 1], len(ends) - 1
    totals: dict[str, list[float]] = {kind: [0, 0.0] for kind, _ in KINDS}
    totals["other"] = [0, 0.0]
    for name, us in found:
        entry = totals[kind_of(name)]
        entry[0] += 1
        entry[1] += us
    return steps, {kind: (n / steps, us / steps) for kind, (n, us) in totals.items() if n}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--steps", type=int)
    args = p.parse_args(argv)
    try:
        steps, table = step_table(kernels(args.csv), args.steps)
    except (OSError, ValueError) as e:
        print(f"{args.csv}: {e}")
        return 1
    total = sum(us for _, us in table.values())
    cells = [f"{kind} {us:.0f} ({n:.0f} kernels)" for kind, (n, us) in table.items()]
    print(f"{args.csv.name}, per decode step ({steps} steps), us: " + ", ".join(cells) + f"; total {total:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
