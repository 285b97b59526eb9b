"""Prefill attention op time on the GPU (qkv_prep + attend, one fresh prompt), per layer and for
all layers of the 1B and 8B Llama shapes (scripts/make_random_llama.py presets).

    python scripts/bench_prefill_attention.py [--tokens 2048] [--dtype bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from trtllm_runtime import _core

# name: (num_layers, num_heads, num_kv_heads, head_dim)
SHAPES = {"llama_1b": (16, 32, 8, 64), "llama_8b": (32, 32, 8, 128)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192], help="prompt lengths")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--tokens-per-block", type=int, default=32)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    results = []
    for name, (layers, h, h_kv, d) in SHAPES.items():
        for n in args.tokens:
            ms = _core.cuda_kernels.attention_prefill_ms(n, h, h_kv, d, args.dtype, args.tokens_per_block)
            # causal Q·Kᵀ and P·V: 2 GEMMs of n * (n + 1) / 2 * d multiply-adds per head
            tflops = 4.0 * h * d * n * (n + 1) / 2 / (ms * 1e-3) / 1e12
            results.append(dict(shape=name, tokens=n, dtype=args.dtype, layer_ms=ms, all_layers_ms=ms * layers,
                                tflops=tflops))
            print(f"{name:9s} {n:6d} tokens {args.dtype}: {ms:8.3f} ms per layer, {ms * layers:8.2f} ms for "
                  f"{layers} layers, {tflops:6.1f} TFLOP/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
