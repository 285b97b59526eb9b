#!/usr/bin/env python3
"""Per-layer table of the decode GEMVs that `scripts/gpu_check.sh ncu` timed under Nsight Compute.

    python scripts/ncu_gemv_table.py ncu_gemv_tp1.csv [ncu_gemv_tp1_env0.csv ...]

Each CSV is `ncu --csv --metrics gpu__time_duration.sum,...` of `scripts/bench_weight_only.py
--reps 1` with `-k regex:gemv`: for each layer shape (qkv, o, gate_up, down) the same number of
launches of each scheme (bf16, int8_wo, int4_wo, int4_awq, fp8), in that order. Prints, per file,
each scheme's mean time per shape and their sum per layer (us), so that an A/B call's summary is in
its log even when the CSVs do not come back.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

SHAPES = ("qkv", "o", "gate_up", "down")
SCHEMES = ("bf16", "int8", "int4", "awq", "fp8")  # scripts/bench_weight_only.py's order
_TO_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def kernels(path: Path) -> list[tuple[str, float]]:
    """(kernel name, gpu__time_duration in us) of every profiled kernel, in launch order (the
    program's own output and ncu's notes share the file: only the quoted CSV lines are read)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith('"')]
    found: dict[str, tuple[str, float]] = {}
    for row in csv.DictReader(lines):
        if row.get("Metric Name") == "gpu__time_duration.sum":
            value = float(row["Metric Value"].replace(",", ""))
            found.setdefault(row["ID"], (row.get("Kernel Name", ""), value * _TO_US[row.get("Metric Unit", "ns")]))
    return list(found.values())


def kernel_times_us(path: Path) -> list[float]:
    return [us for _, us in kernels(path)]


def table(times: list[float]) -> dict[str, dict[str, float]]:
    """scheme -> shape -> mean time (us)."""
    per = len(times) // (len(SHAPES) * len(SCHEMES))
    if per == 0 or per * len(SHAPES) * len(SCHEMES) != len(times):
        raise ValueError(f"{len(times)} kernels do not split into {len(SHAPES)} shapes x {len(SCHEMES)} schemes")
    out: dict[str, dict[str, float]] = {s: {} for s in SCHEMES}
    for i, shape in enumerate(SHAPES):
        for j, scheme in enumerate(SCHEMES):
            start = (i * len(SCHEMES) + j) * per
            out[scheme][shape] = sum(times[start:start + per]) / per
    return out


def main(paths: list[str]) -> int:
    status = 0
    for name in paths:
        try:
            t = table(kernel_times_us(Path(name)))
        except (OSError, ValueError) as e:
            print(f"{name}: {e}")
            status = 1
            continue
        cells = [f"{s} " + " ".join(f"{t[s][x]:.1f}" for x in SHAPES) + f" = {sum(t[s].values()):.1f}"
                 for s in SCHEMES]
        print(f"{Path(name).name} (us, {' / '.join(SHAPES)} = per layer): " + " | ".join(cells))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
