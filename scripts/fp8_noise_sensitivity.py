#!/usr/bin/env python3
"""How far an fp8 engine's logits move when its FP8 GEMMs are as precise as Hopper's tensor cores.

Hopper's FP8 MMAs keep about 14 significand bits inside a k-block (the bound of
test_cuda_quant_kernels.py), so a GPU fp8_linear output differs from the exact one by up to ~2^-14
relative; each next activation quantization (3 significand bits) turns some of those differences
into whole-code moves. This script builds the tiny Llama of tests/test_cuda_quantized.py as an
fp8 float32 checkpoint, runs its graph in the float64 interpreter (tests/graph_reference.py)
exactly and with relative noise of a given size on every fp8_linear output, and prints the largest
context-logit difference over the test's prompts as a fraction of the logit scale: the
CPU-vs-GPU bound that test can honestly hold (measured: 2.7e-2 to 3.9e-2 at 2^-14 over 4 seeds).

    python scripts/fp8_noise_sensitivity.py [--seeds 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import graph_reference  # noqa: E402
import tiny_hf  # noqa: E402

PROMPTS = [[5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11, 54, 90, 2, 33, 71], [7, 2, 90], [33]]


def tiny_fp8_graph(tmp: Path):
    from trtllm_build.convert import convert, load_checkpoint
    from trtllm_build.models import trace
    from trtllm_build.passes import optimize
    from trtllm_build.quantization.options import QuantOptions

    tiny_hf.save_trained_scale_llama(tmp / "hf")  # the model of tests/test_cuda_quantized.py
    options = dataclasses.replace(QuantOptions("fp8"), calib_size=4, calib_seq_len=64)
    convert(tmp / "hf", tmp / "ckpt", "float32", 1, options)
    return optimize(trace(*load_checkpoint(tmp / "ckpt")), max_num_tokens=64, max_output_rows=64)


def context_logits(graph, rel_noise: float, seed: int) -> list[np.ndarray]:
    rng, exact_node = np.random.default_rng(seed), graph_reference._run_node

    def noisy_node(node, env, weights, g):
        exact_node(node, env, weights, g)
        if rel_noise and node.op == "fp8_linear":
            y = env[node.outputs[0]]
            env[node.outputs[0]] = y * (1 + rel_noise * rng.uniform(-1, 1, y.shape))

    graph_reference._run_node = noisy_node
    try:
        return [graph_reference.run_graph(graph, np.array(p), output_rows=list(range(len(p))))["logits"]
                for p in PROMPTS]
    finally:
        graph_reference._run_node = exact_node


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graph = tiny_fp8_graph(Path(tmp))
    exact = context_logits(graph, 0.0, 0)
    for rel in (2.0**-24, 2.0**-14, 2.0**-9):  # float32, Hopper FP8 accumulation, bfloat16
        errs = [max(np.abs(g - e).max() / np.abs(e).max() for g, e in zip(context_logits(graph, rel, s), exact))
                for s in range(args.seeds)]
        print(f"relative noise 2^{np.log2(rel):.0f} on fp8_linear outputs: context logits move by "
              f"{min(errs):.2e} .. {max(errs):.2e} of the scale")


if __name__ == "__main__":
    main()
