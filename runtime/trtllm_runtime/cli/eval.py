"""trtllm-eval perplexity: score a text file with an engine, window by window."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from trtllm_runtime.executor import EngineDirError
from trtllm_runtime.model_runner import ModelRunner
from trtllm_runtime.tokenizer import Tokenizer


def window_nll(context_logits: np.ndarray, ids: list[int]) -> float:
    """Summed negative log-likelihood of ids[1:] given their prefixes (float64 log-softmax)."""
    logits = context_logits[: len(ids) - 1].astype(np.float64)
    peak = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(-1)) + peak[:, 0]
    return float(np.sum(log_z - logits[np.arange(len(ids) - 1), ids[1:]]))


def perplexity(runner: ModelRunner, ids: list[int], window: int) -> tuple[float, int]:
    """Scores consecutive windows independently, each in flight together; each window's first
    token is unscored. Returns (perplexity, scored tokens)."""
    windows = [ids[i:i + window] for i in range(0, len(ids), window)]
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise ValueError(f"need at least 2 tokens to score, the text has {len(ids)}")
    handles = [runner.submit(w, max_new_tokens=1, end_id=-1, return_context_logits=True) for w in windows]
    total, count = 0.0, 0
    for w, handle in zip(windows, handles):
        context = None
        for response in handle.responses():
            if response.get("error"):
                raise RuntimeError(response["error"])
            context = response.get("context_logits", context)
        total += window_nll(context, w)
        count += len(w) - 1
    return math.exp(total / count), count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trtllm-eval", description="Evaluate an engine.")
    sub = p.add_subparsers(dest="task", required=True)
    ppl = sub.add_parser("perplexity", help="perplexity of a text file, in independent windows")
    ppl.add_argument("--engine-dir", type=Path, required=True,
                     help="engine dir built with --gather-context-logits")
    ppl.add_argument("--text-file", type=Path, required=True)
    ppl.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    ppl.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (default: all)")
    args = p.parse_args(argv)
    try:
        if args.window < 2:
            raise ValueError(f"--window must be >= 2, got {args.window}")
        text = args.text_file.read_text()
        ids = Tokenizer.from_dir(args.engine_dir).encode(text, add_special_tokens=False)
        if args.max_tokens:
            ids = ids[: args.max_tokens]
        start = time.perf_counter()
        with ModelRunner.from_dir(args.engine_dir) as runner:
            if not runner.is_leader:
                return 0  # a follower rank under mpirun: runs rank 0's iterations until it closes
            value, count = perplexity(runner, ids, args.window)
        print(json.dumps({"perplexity": value, "tokens": count, "seconds": round(time.perf_counter() - start, 3)}))
        return 0
    except (ValueError, EngineDirError, OSError) as e:
        print(f"trtllm-eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
