"""scripts/ncu_gemv_table.py: Nsight Compute's CSV of the decode GEMVs -> per-layer times."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("ncu_gemv_table", Path(__file__).parent.parent / "scripts" / "ncu_gemv_table.py")
ncu_gemv_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu_gemv_table)


def ncu_csv(times_ns: list[int]) -> str:
    """What `ncu --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum` writes: the program's
    own output and ncu's notes first, then one row per kernel and metric."""
    out = io.StringIO()
    out.write("layer  n x k | bf16 us ...\n==PROF== Connected to process 1\n")
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"])
    for i, t in enumerate(times_ns):
        w.writerow([i, "gemv", "dram__bytes_read.sum", "byte", "1,000"])
        w.writerow([i, "gemv", "gpu__time_duration.sum", "ns", f"{t:,}"])
    return out.getvalue()


def test_launches_are_averaged_per_shape_and_scheme(tmp_path, capsys):
    # 4 shapes x 5 schemes x 2 launches; launch j of (shape i, scheme s) takes 1000 * (10 i + s) + j ns
    times = [1000 * (10 * i + s) + j for i in range(4) for s in range(5) for j in range(2)]
    path = tmp_path / "ncu_gemv_tp1.csv"
    path.write_text(ncu_csv(times))
    t = ncu_gemv_table.table(ncu_gemv_table.kernel_times_us(path))
    assert t["int4"]["gate_up"] == pytest.approx(22.0005)  # shape 2, scheme 2
    assert t["fp8"]["down"] == pytest.approx(34.0005)
    assert ncu_gemv_table.main([str(path)]) == 0
    assert "awq 3.0 13.0 23.0 33.0 = 72.0" in capsys.readouterr().out


def test_a_count_that_does_not_split_is_reported(tmp_path, capsys):
    path = tmp_path / "ncu.csv"
    path.write_text(ncu_csv([1000] * 21))
    assert ncu_gemv_table.main([str(path)]) == 1
    assert "21 kernels do not split" in capsys.readouterr().out
