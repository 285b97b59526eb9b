"""trtllm-run: generate from the command line and report speed."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from trtllm_runtime.executor import EngineDirError
from trtllm_runtime.llm import LLM, SamplingParams
from trtllm_runtime.parallel import launcher_rank


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="trtllm-run", description="Generate text with an engine dir and print tokens/s. A tensor-parallel "
        "engine runs under `mpirun -n <tp_size> trtllm-run ...` (only rank 0 prints) or, without mpirun, starts "
        "its ranks itself with the MPI launcher.")
    p.add_argument("--engine-dir", type=Path, required=True, help="engine dir written by trtllm-build")
    p.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for a batch")
    p.add_argument("--input-ids", action="append", default=[],
                   help="a prompt as comma-separated token ids (instead of --prompt); repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ignore-eos", action="store_true", help="always generate max-new-tokens tokens")
    p.add_argument("--streaming", action="store_true", help="print text as it is generated (first prompt)")
    p.add_argument("--kv-cache-bytes", type=int, default=0, help="KV cache size (default: a share of free memory)")
    args = p.parse_args(argv)
    if not args.prompt and not args.input_ids:
        p.error("give at least one --prompt or --input-ids")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[trtllm-run] %(message)s")
    try:
        prompts: list = list(args.prompt)
        for ids in args.input_ids:
            prompts.append([int(t) for t in ids.split(",") if t.strip()])
        params = SamplingParams(max_tokens=args.max_new_tokens, min_tokens=args.min_new_tokens,
                                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                ignore_eos=args.ignore_eos)
        with LLM(args.engine_dir, kv_cache_bytes=args.kv_cache_bytes) as llm:
            if not llm.runner.is_leader:
                return 0  # a follower rank under mpirun: runs rank 0's iterations until it closes
            start = time.perf_counter()
            if args.streaming:
                printed = 0
                for output in llm.generate_stream(prompts[0], params):
                    sys.stdout.write(output.text[printed:])
                    sys.stdout.flush()
                    printed = len(output.text)
                sys.stdout.write("\n")
                outputs = [output]
            else:
                outputs = llm.generate(prompts, params)
            seconds = time.perf_counter() - start
            generated = 0
            for prompt, output in zip(prompts, outputs):
                generated += len(output.token_ids)
                if not args.streaming:
                    print(f"prompt: {prompt!r}\noutput: {output.text!r}")
                print(f"tokens: {output.token_ids}  finish: {output.outputs[0].finish_reason}  "
                      f"time to first token: {output.metrics.get('time_to_first_token_s', 0) * 1e3:.1f} ms")
            print(f"{generated} tokens in {seconds:.2f} s: {generated / seconds:.1f} tokens/s "
                  f"({len(prompts)} request(s))")
        return 0
    except (ValueError, EngineDirError, FileNotFoundError) as e:
        if launcher_rank() == 0:
            print(f"trtllm-run: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. a tensor-parallel rank failed to start (the message names it)
        if launcher_rank() == 0:
            print(f"trtllm-run: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
