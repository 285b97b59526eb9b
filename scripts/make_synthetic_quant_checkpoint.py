#!/usr/bin/env python3
"""A quantized checkpoint with synthetic scales instead of calibration: for speed benchmarks on
random-weight models only (make_random_llama.py), never for quality.

    python scripts/make_synthetic_quant_checkpoint.py --model-dir /tmp/llama_8b --output-dir /tmp/ckpt_awq \\
        --quant int4_awq [--group-size 128] [--kv-cache fp8] [--quantize-lm-head]

Calibration runs the HF model in torch on the CPU and AWQ searches 12 scale candidates per layer
input (about an hour for an 8B model, and it needs a tokenizer, which random models lack). Kernel
speed does not depend on the scale values, so this runs `trtllm-convert`'s own conversion with the
statistics replaced: every layer input has amax 4 and mean |x| 1, AWQ's pre_quant_scale is drawn
from [0.5, 2] (the same tensors, shapes and dtypes as a calibrated checkpoint), the KV cache amax
is 8. Schemes without calibration (int8_wo, int4_wo) need no script: use trtllm-convert.
"""

from __future__ import annotations

import argparse
import logging
import zlib
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--quant", choices=("int4_awq", "int8_sq", "fp8"), default=None)
    p.add_argument("--kv-cache", choices=("fp8",), default=None)
    p.add_argument("--group-size", type=int, default=None, help="int4_awq group size (default 128)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--quantize-lm-head", action="store_true", help="lm_head quantized too (trtllm-convert's flag)")
    args = p.parse_args()
    if args.quant is None and args.kv_cache is None:
        p.error("nothing to quantize: pass --quant and/or --kv-cache")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from trtllm_build.convert import convert, linear_groups
    from trtllm_build.quantization import calibrate as calibrate_module
    from trtllm_build.quantization import quantize_weights
    from trtllm_build.quantization.options import QuantOptions

    def synthetic_calibrate(model_dir, config, **_):
        sizes = config.linear_input_sizes()
        inputs = {}
        for group in linear_groups(config):
            k = sizes[group[0].rsplit(".", 1)[-1]]  # by leaf name: q, ..., lm_head
            inputs[group[0]] = quantize_weights.InputStats(np.full(k, 4.0, np.float32), np.ones(k, np.float32),
                                                           np.zeros((0, k), np.float32))
        kv_amax = {i: 8.0 for i in range(config.num_hidden_layers)}
        return quantize_weights.CalibStats(inputs=inputs, kv_amax=kv_amax, tokens=0)

    def synthetic_awq_scales(weights, stats, group_size, dtype):
        # Seeded by the group's first weight row: the same scales whatever order the groups are
        # quantized in (the converter runs them on several threads).
        group_rng = np.random.default_rng(zlib.crc32(weights[0][0].tobytes()))
        return group_rng.uniform(0.5, 2.0, weights[0].shape[1]).astype(np.float32).astype(dtype)

    calibrate_module.calibrate = synthetic_calibrate      # convert() imports it when it calibrates
    quantize_weights._awq_scales = synthetic_awq_scales   # quantize_group looks it up at call time
    convert(args.model_dir, args.output_dir, args.dtype, 1,
            QuantOptions(args.quant, kv_cache=args.kv_cache, group_size=args.group_size,
                         quantize_lm_head=args.quantize_lm_head,
                         calibrator="builtin"))  # the one patched above (not ModelOpt where installed)


if __name__ == "__main__":
    main()
