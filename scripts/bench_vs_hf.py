#!/usr/bin/env python3
"""Our engine vs Hugging Face transformers `generate`, same model, same lengths, same machine,
one run. Prints a table (tokens/s and the ratio) and writes JSON.

    python scripts/bench_vs_hf.py --model default --dtype bfloat16 --batch-sizes 1,16 \
        --input-len 64 --output-len 64 --json bench_cpu.json

`--model default` is SmolLM2-135M-Instruct (GGUF): our converter reads it, transformers loads
the same file with its GGUF loader. Needs torch, transformers, gguf and accelerate.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def hf_model(model: Path, dtype: str, device: str):
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if model.suffix == ".gguf":
        m = transformers.AutoModelForCausalLM.from_pretrained(str(model.parent), gguf_file=model.name)
    else:
        m = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
    return m.to(device=device, dtype=torch_dtype).eval()


def hf_tokens_per_s(m, prompts: list[list[int]], output_len: int, device: str) -> float:
    import torch

    ids = torch.tensor(prompts, device=device)  # equal lengths: no padding needed
    kw = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        m.generate(ids[:1, :8], **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = m.generate(ids, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    assert out.shape[1] == len(prompts[0]) + output_len
    return len(prompts) * output_len / seconds


def ours_tokens_per_s(runner, prompts: list[list[int]], output_len: int) -> float:
    runner.generate([prompts[0][:8]], max_new_tokens=4, end_id=-1)  # warm up
    start = time.perf_counter()
    out = runner.generate(prompts, max_new_tokens=output_len, min_new_tokens=output_len, end_id=-1)
    seconds = time.perf_counter() - start
    assert all(len(o) == output_len for o in out)
    return len(prompts) * output_len / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="HF dir, .gguf file, or 'default' (SmolLM2 GGUF)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--hf-dtype", default=None, help="dtype for transformers (default: --dtype)")
    p.add_argument("--engine-dir", type=Path,
                   help="an engine already built from --model (skips convert and build: big models)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    from trtllm_build.build import BuildConfig, build
    from trtllm_build.convert import convert, model_config_from_hf
    from trtllm_build.default_model import default_model_path
    from trtllm_runtime import ModelRunner

    model = default_model_path() if args.model == "default" else Path(args.model)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    device = "cuda" if args.target == "cuda" else "cpu"
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.engine_dir:
            config = model_config_from_hf(json.loads((model / "config.json").read_text()), args.dtype)
            engine = args.engine_dir
        else:
            config = convert(model, Path(tmp) / "ckpt", args.dtype)
            engine = build(Path(tmp) / "ckpt", Path(tmp) / "engine",
                           BuildConfig(max_batch_size=max(batch_sizes), max_num_tokens=max(batch_sizes) * args.input_len,
                                       max_seq_len=args.input_len + args.output_len, target=args.target))
        prompts = {b: rng.integers(0, config.vocab_size, (b, args.input_len)).tolist() for b in batch_sizes}
        with ModelRunner.from_dir(engine) as runner:
            ours = {b: ours_tokens_per_s(runner, prompts[b], args.output_len) for b in batch_sizes}
        del runner  # frees the engine's device memory (KV cache) before transformers loads on the same GPU
        gc.collect()
    hf = hf_model(model, args.hf_dtype or args.dtype, device)
    theirs = {b: hf_tokens_per_s(hf, prompts[b], args.output_len, device) for b in batch_sizes}
    print(f"{'batch':>5} {'ours tok/s':>11} {'HF tok/s':>9} {'ratio':>6}   "
          f"({config.hf_architecture}, {args.dtype}, in {args.input_len}, out {args.output_len}, {args.target})")
    for b in batch_sizes:
        ratio = ours[b] / theirs[b]
        print(f"{b:>5} {ours[b]:>11.1f} {theirs[b]:>9.1f} {ratio:>5.2f}x")
        results.append({"batch_size": b, "ours_tokens_per_s": ours[b], "hf_tokens_per_s": theirs[b], "ratio": ratio})
    if args.json:
        meta = {"model": str(model), "dtype": args.dtype, "hf_dtype": args.hf_dtype or args.dtype,
                "input_len": args.input_len, "output_len": args.output_len, "target": args.target,
                "machine": platform.processor() or platform.machine()}
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
