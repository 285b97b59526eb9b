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


def ncu_csv(times_ns: list[int], names: list[str] | None = None) -> str:
    """What `ncu --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum` writes: the program's
    own output and ncu's notes first, then one row per kernel and metric."""
    out = io.StringIO()
    out.write("layer  n x k | bf16 us ...\n==PROF== Connected to process 1\n")
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"])
    for i, t in enumerate(times_ns):
        name = names[i] if names else "gemv"
        w.writerow([i, name, "dram__bytes_read.sum", "byte", "1,000"])
        w.writerow([i, name, "gpu__time_duration.sum", "ns", f"{t:,}"])
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


def test_decode_table_sums_each_kind_per_step(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "scripts"))
    import ncu_decode_table

    # Steps of one layer: an unclassified kernel, norm, GEMV, attention, the o_proj input's quantize,
    # the fused all-reduce + norm, SiLU·mul (quantizing), a cuBLASLt GEMM, then sampling. The
    # profile cuts steps at both ends: only the two whole steps between sampling kernels count.
    step = [("void at::native::elementwise_kernel(...)", 500),
            ("void trtllm::kernels::norm_row_vec_kernel<__nv_bfloat16>(...)", 3000),
            ("void trtllm::kernels::weight_only_gemv_kernel<__nv_bfloat16, float, 4, 1>(...)", 10000),
            ("void trtllm::kernels::decode_kernel<__nv_bfloat16, 128>(...)", 8000),
            ("void trtllm::kernels::quantize_kernel<__nv_bfloat16>(...)", 2000),
            ("void trtllm::kernels::peer_all_reduce_add_rms_norm_kernel<__nv_bfloat16>(...)", 4000),
            ("void trtllm::kernels::silu_mul_quant_kernel<__nv_bfloat16>(...)", 2500),
            ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", 20000),
            ("void trtllm::kernels::sample_rows_kernel(...)", 1000)]
    found = step[3:] + step + step + step[:4]
    path = tmp_path / "ncu_decode_8b.csv"
    path.write_text(ncu_csv([t for _, t in found], [n for n, _ in found]))
    steps, table = ncu_decode_table.step_table(ncu_gemv_table.kernels(path))
    assert steps == 2
    assert table == {"sampling": (1, 1.0), "attention": (1, 8.0), "all_reduce": (1, 4.0), "norm": (1, 3.0),
                     "silu_mul": (1, 2.5), "quantize": (1, 2.0), "gemm": (2, 30.0), "other": (1, 0.5)}
    assert ncu_decode_table.main([str(path), "--steps", "1"]) == 0
    assert "total 161" in capsys.readouterr().out  # every kernel (37.5 + 51 + 51 + 21.5 us) as one step
    path.write_text(ncu_csv([1000], ["gemv"]))
    assert ncu_decode_table.main([str(path)]) == 1
    assert "0 sampling kernels" in capsys.readouterr().out
