#!/usr/bin/env python3
"""Decode attention alone on the GPU: one launch per layer for a batch of decode tokens, by context
length and by how many key ranges (splits) the launch plans, warm and on cold caches.

    python scripts/bench_decode_attention.py [--batch 1] [--contexts 0 32 128 256 384 1024 4095]
                                             [--splits 0 1 2 4 8 16 33 64] [--plan-len 4096]

The Llama-3.1-8B attention shape (32 query heads, 8 kv heads, head_dim 128), bf16, 32 tokens per
cache block. Split 0 is the planner's choice for an engine of max_seq_len --plan-len (what a decode
graph replays with); a request of n keys uses ceil(n / max(ceil(n / splits), 32)) of them. "cold":
the launches cycle over copies of the cache that together exceed twice the 50 MB L2, as a model's
layers do. Microseconds per launch, the launches replayed back to back as one CUDA graph, as in a
decode step (each launch's gap included).
"""

from __future__ import annotations

import argparse
import math

from trtllm_runtime import _core

H, H_KV, D, TPB = 32, 8, 128, 32
L2_BYTES = 50 * 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--contexts", type=int, nargs="+", default=[0, 32, 128, 256, 384, 1024, 4095])
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 33, 64])
    p.add_argument("--plan-len", type=int, default=4096)
    p.add_argument("--iters", type=int, default=300)
    args = p.parse_args()
    k = _core.cuda_kernels
    print(f"decode attention, batch {args.batch}, h {H} / kv {H_KV} / d {D} bf16, us per launch "
          f"(split 0: planned for {args.plan_len} tokens)")
    print(f"{'context':>8} {'cache':>5} | " + " ".join(f"{'s' + str(s):>7}" for s in args.splits))
    for context in args.contexts:
        blocks = math.ceil((context + 1) / TPB)
        kv_bytes = args.batch * blocks * 2 * H_KV * TPB * D * 2
        for cache, copies in (("warm", 1), ("cold", max(2, math.ceil(2 * L2_BYTES / kv_bytes)))):
            row = [k.attention_decode_us(args.batch, context, H, H_KV, D, "bfloat16", TPB, s, args.plan_len, copies,
                                         args.iters) for s in args.splits]
            print(f"{context:>8} {cache:>5} | " + " ".join(f"{us:7.2f}" for us in row))


if __name__ == "__main__":
    main()
