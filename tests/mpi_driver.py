"""Runs on every rank of `mpiexec -n N python mpi_driver.py SPEC.json` for test_tp_mpi.py.

SPEC: {"out_dir": ..., "tasks": [...]}; each task is one of
  {"kind": "generate", "name", "engine_dir", "prompts", "new_tokens"}: ModelRunner on every rank,
      greedy with context and generation logits; rank 0 saves the outputs, every rank its role.
  {"kind": "collectives", "name"}: MpiComm.all_reduce_sum / all_gather on seeded random data.
  {"kind": "nccl", "name"}: the NCCL communicator on this rank's GPU (GPU machines only).
  {"kind": "all_reduce_paths", "name"}: all-reduces of several sizes and dtypes through the peer
      path and through NCCL (GPU machines only).
  {"kind": "all_reduce_norm", "name"}: all_reduce_add_rms_norm through the fused peer kernel for
      several row counts, widths and dtypes (GPU machines only).
  {"kind": "die", "rank"}: after loading `engine_dir`, that rank exits without a word.
  {"kind": "stall", "rank"}: that rank never opens `engine_dir` (it sleeps); the others do.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from trtllm_runtime import ModelRunner, parallel


def generate(task: dict, out_dir: Path, rank: int) -> None:
    with ModelRunner.from_dir(task["engine_dir"]) as runner:
        out = runner.generate(task["prompts"], max_new_tokens=task["new_tokens"], end_id=-1, return_dict=True,
                              return_context_logits=True, return_generation_logits=True)
    role = {"rank": rank, "is_leader": runner.is_leader, "returned_none": out is None,
            "iterations": runner.client.stats()["iterations"], "host": socket.gethostname()}
    (out_dir / f"{task['name']}.rank{rank}.json").write_text(json.dumps(role))
    if runner.is_leader:
        arrays = {}
        for i in range(len(task["prompts"])):
            arrays[f"tokens{i}"] = np.asarray(out["output_ids"][i])
            arrays[f"context{i}"] = out["context_logits"][i]
            arrays[f"generation{i}"] = out["generation_logits"][i]
        np.savez(out_dir / f"{task['name']}.npz", **arrays)


def collectives(task: dict, out_dir: Path, comm) -> None:
    import ml_dtypes

    rng = np.random.default_rng(comm.rank)
    x32 = rng.standard_normal(1000).astype(np.float32)
    results = {"input_f32": x32.copy()}
    comm.all_reduce_sum(x32, "float32")
    results["sum_f32"] = x32
    for name, dtype in (("bf16", ml_dtypes.bfloat16), ("f16", np.float16)):
        x = (rng.standard_normal(1000) * 3).astype(dtype)
        results[f"input_{name}"] = x.view(np.uint16).copy()
        bits = x.view(np.uint16)
        comm.all_reduce_sum(bits, "bfloat16" if name == "bf16" else "float16")
        results[f"sum_{name}"] = bits.copy()
    results["gather_i32"] = comm.all_gather(np.arange(5, dtype=np.int32) + 10 * comm.rank, "int32")
    np.savez(out_dir / f"{task['name']}.rank{comm.rank}.npz", **results)


def nccl(task: dict, out_dir: Path, comm) -> None:
    import ml_dtypes

    from trtllm_runtime import _core

    rng = np.random.default_rng(comm.rank)
    results = {}
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16)):
        x = rng.standard_normal(4096).astype(dtype)
        total, gathered = _core.nccl_collectives_check(comm, x.view(np.uint16) if name == "bfloat16" else x, name)
        results[f"input_{name}"], results[f"sum_{name}"], results[f"gathered_{name}"] = x, total, gathered
    np.savez(out_dir / f"{task['name']}.rank{comm.rank}.npz", **{k: np.asarray(v).view(np.uint8)
                                                                 for k, v in results.items()})


ALL_REDUCE_SIZES = (1, 7, 4096, 12293, 262144)  # 16-byte units and single items; one block to 32


ALL_REDUCE_NORM_SHAPES = ((40, 1024), (3, 8192), (5, 2048), (1, 4096), (2, 72))  # largest first; rows past 32 blocks
ALL_REDUCE_NORM_CALLS = 5  # fused, plain, fused, plain, fused: the slots are reused after both kernels cleared them


def all_reduce_norm(task: dict, out_dir: Path, comm) -> None:
    import ml_dtypes

    from trtllm_runtime import _core

    shared = np.random.default_rng(7)  # the residual and the weight: the same on every rank
    rng = np.random.default_rng(200 + comm.rank)
    results = {}
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        shapes = [s for s in ALL_REDUCE_NORM_SHAPES if name != "float32" or s[1] <= 4096]  # <= 1024 vectors
        cases = []
        for rows, dim in shapes:
            partials = [(rng.standard_normal((rows, dim)) * 2).astype(dtype) for _ in range(ALL_REDUCE_NORM_CALLS)]
            for p in partials:
                p.flat[3::7] = -0.0  # the peer path's empty marker: must be sent as a zero
            cases.append((partials, (shared.standard_normal((rows, dim)) * 3).astype(dtype),
                          shared.uniform(0.5, 1.5, dim).astype(dtype), rows))
        bits = lambda a: a.view(np.uint16) if a.itemsize == 2 else a
        outputs = _core.all_reduce_add_rms_norm_check(comm, [[bits(p) for p in c[0]] for c in cases],
                                                     [bits(c[1]) for c in cases], [bits(c[2]) for c in cases],
                                                     [c[3] for c in cases], name, 1e-5)
        for (partials, residual, weight, rows), out in zip(cases, outputs):
            key = f"{name}_{rows}x{weight.size}"
            results |= {f"residual_{key}": residual.view(np.uint8), f"weight_{key}": weight.view(np.uint8)}
            out = iter(out)
            for j, p in enumerate(partials):
                results[f"partial_{j}_{key}"] = p.view(np.uint8)
                if j % 2 == 0:
                    results[f"normed_{j}_{key}"] = np.asarray(next(out)).view(np.uint8)
                results[f"sum_{j}_{key}"] = np.asarray(next(out)).view(np.uint8)
    np.savez(out_dir / f"{task['name']}.rank{comm.rank}.npz", **results)


def all_reduce_paths(task: dict, out_dir: Path, comm) -> None:
    import ml_dtypes

    from trtllm_runtime import _core

    rng = np.random.default_rng(100 + comm.rank)
    results = {}
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        arrays = [(rng.standard_normal(n) * 3).astype(dtype) for n in ALL_REDUCE_SIZES]
        for a in arrays:
            a[3::7] = -0.0  # the peer path's empty marker: must be sent as a zero, not waited for
        bits = [a.view(np.uint16) if a.itemsize == 2 else a for a in arrays]
        for path, peer in (("peer", True), ("nccl", False)):
            for n, total in zip(ALL_REDUCE_SIZES, _core.all_reduce_check(comm, bits, name, peer)):
                results[f"{path}_{name}_{n}"] = np.asarray(total).view(np.uint8)
        for n, a in zip(ALL_REDUCE_SIZES, arrays):
            results[f"input_{name}_{n}"] = a.view(np.uint8)
    np.savez(out_dir / f"{task['name']}.rank{comm.rank}.npz", **results)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(spec["out_dir"])
    comm = parallel.world_comm()
    for task in spec["tasks"]:
        if task["kind"] == "generate":
            generate(task, out_dir, comm.rank)
        elif task["kind"] == "collectives":
            collectives(task, out_dir, comm)
        elif task["kind"] == "nccl":
            nccl(task, out_dir, comm)
        elif task["kind"] == "all_reduce_paths":
            all_reduce_paths(task, out_dir, comm)
        elif task["kind"] == "all_reduce_norm":
            all_reduce_norm(task, out_dir, comm)
        elif task["kind"] == "stall" and comm.rank == task["rank"]:
            time.sleep(600)
        elif task["kind"] in ("die", "stall"):
            runner = ModelRunner.from_dir(task["engine_dir"])
            if comm.rank == task["rank"]:
                os._exit(3)
            runner.generate([[1, 2, 3]], max_new_tokens=4, end_id=-1)
            runner.close()
        else:
            raise ValueError(f"unknown task {task['kind']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
