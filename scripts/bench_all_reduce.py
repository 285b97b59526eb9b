#!/usr/bin/env python3
"""The peer all-reduce vs NCCL on this machine's GPUs, bfloat16, at TP message sizes.

    mpiexec -n 2 python scripts/bench_all_reduce.py [--json out.json]

Each size is timed as a decode step runs it: 64 all-reduces back to back in a CUDA graph, replayed
20 times. A row of the Llama-3.1-8B shape is 8 KiB (hidden 4096); a batch of b decode tokens is b
rows. Sizes past the peer path's cap (nccl_comm.cpp: 4 MiB pushed to peers per rank) fall back to
NCCL in the peer column too, marked so.
"""

from __future__ import annotations

import argparse
import json

from trtllm_runtime import _core, parallel

SIZES = [8 << 10, 32 << 10, 128 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="rank 0 writes the table here")
    args = p.parse_args()
    comm = parallel.world_comm()
    nccl_us = _core.all_reduce_microseconds(comm, SIZES, False)
    peer_us = _core.all_reduce_microseconds(comm, SIZES, True)
    cap = (4 << 20) // (comm.size - 1)
    if comm.rank != 0:
        return
    rows = [{"bytes": b, "tokens_of_8b": b // 8192, "nccl_us": n, "peer_us": q, "peer_path": b <= cap}
            for b, n, q in zip(SIZES, nccl_us, peer_us)]
    print(f"{comm.size} ranks, bfloat16, us per all-reduce (64 per CUDA graph)")
    print(f"{'bytes':>10} {'8B rows':>8} {'NCCL':>8} {'peer':>8} {'speedup':>8}")
    for r in rows:
        note = "" if r["peer_path"] else "  (past the cap: NCCL)"
        print(f"{r['bytes']:>10} {r['tokens_of_8b']:>8} {r['nccl_us']:>8.1f} {r['peer_us']:>8.1f} "
              f"{r['nccl_us'] / r['peer_us']:>7.2f}x{note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": comm.size, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
