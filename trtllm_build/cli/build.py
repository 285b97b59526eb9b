"""trtllm-build: compile a checkpoint dir into an engine dir, or inspect an engine dir."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from ..build import TARGETS, BuildConfig, BuildError, build
from ..config import ConfigError
from ..dsl.module import WeightError
from ..graph.opset import GraphError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="trtllm-build",
        description="Compile a checkpoint (from trtllm-convert) into one engine file per tensor-parallel rank, "
                    "or print what an engine dir holds with --inspect.")
    p.add_argument("--checkpoint-dir", type=Path, help="checkpoint dir written by trtllm-convert")
    p.add_argument("--output-dir", type=Path, help="engine dir to write (an earlier engine dir there is replaced)")
    p.add_argument("--max-batch-size", type=int, default=64, help="most requests in one iteration (default 64)")
    p.add_argument("--max-num-tokens", type=int, default=4096,
                   help="most tokens (prefill + decode) in one iteration; sizes the activation arena (default 4096)")
    p.add_argument("--max-seq-len", type=int, default=0,
                   help="longest prompt + output per request (default: the model's max_position_embeddings)")
    p.add_argument("--target", choices=TARGETS, default="auto",
                   help="backend to build for; auto picks cuda when a GPU is visible, else cpu")
    p.add_argument("--gather-context-logits", action="store_true",
                   help="let requests return the logits of every prompt token (needed by trtllm-eval "
                        "perplexity and prompt logprobs); sizes the logits buffer for max_num_tokens rows")
    p.add_argument("--workers", type=int, default=1, help="ranks built in parallel processes (default 1)")
    p.add_argument("--inspect", type=Path, metavar="ENGINE_DIR",
                   help="print the op list, fusions, memory plan, weights and target of an engine dir, then exit")
    p.add_argument("--verbose", action="store_true", help="with --inspect: print every op; else: debug logging")
    args = p.parse_args(argv)
    if args.inspect is None and (args.checkpoint_dir is None or args.output_dir is None):
        p.error("--checkpoint-dir and --output-dir are required (or use --inspect ENGINE_DIR)")
    return args


def inspect_engine_dir(engine_dir: Path, verbose: bool = False) -> str:
    from trtllm_runtime import Engine  # the runtime's reader: the engine file is the only contract

    config_path = engine_dir / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{engine_dir} is not an engine dir: config.json is missing")
    config = json.loads(config_path.read_text())
    lines = [f"engine dir {engine_dir}: {config['model_config']['hf_architecture']}, tp_size {config['tp_size']}, "
             f"opset v{config['opset_version']}",
             "build config: " + json.dumps(config["build_config"])]
    for name in config["engine_files"]:
        engine = Engine.open(engine_dir / name)
        plan = engine.memory_plan
        weight_bytes = sum(w.nbytes for w in engine.weights.values())
        counts: dict[str, int] = {}
        for op in engine.ops:
            counts[op["op"]] = counts.get(op["op"], 0) + 1
        lines += [f"{name}: target {engine.target}" + (f" sm_{engine.sm_arch}" if engine.sm_arch else "")
                  + f", format v{engine.format_version}",
                  f"  ops ({len(engine.ops)}): " + ", ".join(f"{op} x{n}" for op, n in counts.items()),
                  "  fusions: " + ", ".join(f"{k} {v}" for k, v in engine.build_options["pass_stats"].items()),
                  f"  memory plan: arena {plan['arena_bytes'] / 2**20:.2f} MiB for {plan['max_num_tokens']} tokens "
                  f"/ {plan['max_output_rows']} logits rows (one buffer per tensor would take "
                  f"{plan['unplanned_bytes'] / 2**20:.2f} MiB)",
                  f"  weights: {len(engine.weights)} tensors, {weight_bytes / 2**20:.2f} MiB",
                  "  quantization: " + _quantization_summary(engine),
                  f"  tactics: {json.dumps(engine.tactics) if engine.tactics else 'none'}"]
        if verbose:
            for i, op in enumerate(engine.ops):
                weights = " ".join(f"{role}={w}" for role, w in op["weights"].items())
                lines.append(f"  {i:4d} {op['op']:<15} {','.join(op['inputs'])} -> {','.join(op['outputs'])}"
                             f"  {weights}")
    return "\n".join(lines)


QUANTIZED_OPS = ("fp8_linear", "int8_linear", "weight_only_linear", "quantize")


def _quantization_summary(engine) -> str:
    """Which ops are quantized: the quantized GEMMs, the ops writing quantized outputs, the KV cache."""
    qc = engine.model_config.get("quantization") or {}
    if not (qc.get("quant_algo") or qc.get("kv_cache_quant_algo")):
        return "none"
    gemms = {op["op"] for op in engine.ops if op["op"] in QUANTIZED_OPS[:3]}
    fused = sum(1 for op in engine.ops if "out_scale" in op["weights"] and op["op"] != "quantize")
    standalone = sum(1 for op in engine.ops if op["op"] == "quantize")
    float_linears = [op["weights"]["weight"] for op in engine.ops if op["op"] == "linear"]
    layouts = Counter(op["attrs"]["weight_layout"] for op in engine.ops if op["op"] == "weight_only_linear")
    parts = [f"{qc.get('quant_algo') or 'no linears'}" + (f" group {qc['group_size']}" if qc.get("group_size") else ""),
             ", ".join(f"{op} x{sum(1 for o in engine.ops if o['op'] == op)}" for op in sorted(gemms)) or "no quantized GEMMs",
             *([f"weight layouts: {', '.join(f'{name} x{n}' for name, n in sorted(layouts.items()))}"] if layouts else []),
             f"{fused} activation quantizations fused into norms/activations, {standalone} standalone",
             f"unquantized linears: {', '.join(float_linears) or 'none'}",
             f"KV cache: {qc.get('kv_cache_quant_algo') or 'activation dtype'}"]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[trtllm-build] %(message)s")
    from trtllm_runtime import EngineFormatError

    try:
        if args.inspect is not None:
            print(inspect_engine_dir(args.inspect, args.verbose))
            return 0
        config = BuildConfig(max_batch_size=args.max_batch_size, max_num_tokens=args.max_num_tokens,
                             max_seq_len=args.max_seq_len, target=args.target,
                             gather_context_logits=args.gather_context_logits)
        out = build(args.checkpoint_dir, args.output_dir, config, workers=args.workers)
        logging.getLogger(__name__).info("engine written to %s", out)
        return 0
    except (BuildError, ConfigError, WeightError, GraphError, EngineFormatError, OSError) as e:
        print(f"trtllm-build: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
