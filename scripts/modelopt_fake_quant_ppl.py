"""Perplexity of ModelOpt's fake-quant model in torch (float32, CPU), scored like `trtllm-eval
perplexity` (independent windows, each window's first token unscored): the reference a quantized
engine is held to. The model is calibrated exactly as `trtllm-convert --calibrator modelopt`
calibrates it (same text, batches, configs and fused-layer scale sharing), so an engine converted
with the same flags holds the same quantized values.

    python scripts/modelopt_fake_quant_ppl.py --model-dir default --text-file topics.txt --window 256 \
        --max-tokens 2048 [--quant fp8|int8_sq|int8_wo|int4_wo|int4_awq] [--kv-cache fp8] \
        [--calib-size 8] [--calib-seq-len 256] [--group-size N] [--smoothquant-alpha 0.5] [--quantize-lm-head]

Prints one JSON line: {"perplexity", "tokens", "seconds"}. Without --quant / --kv-cache it scores
the float model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from trtllm_build.convert import model_config_from_hf
from trtllm_build.quantization.calib_data import read_calibration_text
from trtllm_build.quantization.calibrate import calibration_batches, load_hf_model
from trtllm_build.quantization.modelopt_calibrate import quantize_hf_model
from trtllm_build.quantization.options import QuantOptions, quant_config
from trtllm_build.quantization.schemes import CLI_SCHEMES
from trtllm_runtime.cli.eval import window_nll


def _model_path(name: str) -> Path:
    if name == "default":
        from trtllm_build.default_model import default_model_path
        return default_model_path()
    return Path(name)


def _hf_config(path: Path) -> dict:
    if path.suffix == ".gguf":
        from trtllm_build.gguf_reader import read_gguf
        return read_gguf(path).config
    from trtllm_build.hf_reader import read_hf_config
    return read_hf_config(path)


def perplexity(model, ids: list[int], window: int) -> tuple[float, int]:
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), window):
            w = ids[start:start + window]
            if len(w) < 2:
                continue
            logits = model(torch.tensor([w])).logits[0].double().numpy()
            total += window_nll(logits, w)
            count += len(w) - 1
    return math.exp(total / count), count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--text-file", type=Path, required=True)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=0)
    p.add_argument("--quant", choices=tuple(CLI_SCHEMES))
    p.add_argument("--kv-cache", choices=("fp8",))
    p.add_argument("--calib-data", type=Path)
    p.add_argument("--calib-size", type=int, default=16)
    p.add_argument("--calib-seq-len", type=int, default=256)
    p.add_argument("--group-size", type=int)
    p.add_argument("--smoothquant-alpha", type=float, default=0.5)
    p.add_argument("--quantize-lm-head", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="[fake-quant] %(message)s")
    start = time.perf_counter()
    path = _model_path(args.model_dir)
    model, encode = load_hf_model(path)
    if args.quant or args.kv_cache:
        options = QuantOptions(scheme=args.quant, kv_cache=args.kv_cache, calib_data=args.calib_data,
                               calib_size=args.calib_size, calib_seq_len=args.calib_seq_len,
                               group_size=args.group_size, smoothquant_alpha=args.smoothquant_alpha,
                               quantize_lm_head=args.quantize_lm_head)
        config = model_config_from_hf(_hf_config(path), "float32")
        config.quantization = quant_config(options, config, "modelopt")
        batches = calibration_batches(encode, read_calibration_text(args.calib_data), args.calib_size,
                                      args.calib_seq_len)
        quantize_hf_model(model, config, batches, args.smoothquant_alpha)
    ids = encode(args.text_file.read_text())
    if args.max_tokens:
        ids = ids[:args.max_tokens]
    value, count = perplexity(model, ids, args.window)
    print(json.dumps({"perplexity": value, "tokens": count, "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
