#!/usr/bin/env python3
"""Greedy tokens of a tensor-parallel engine against the same model at TP=1, on random prompts.

    python scripts/tp_check.py --reference engine_tp1/ --candidate engine_tp2/ --new-tokens 32 --json out.json

Runs each engine dir in turn from this process (a TP engine through orchestrator mode: the ranks
are started with mpiexec), greedy with generation logits, and reports per prompt whether the
tokens match and, where they do not, the first diverging position, both tokens, and the margin
there in the reference's logits (its token's logit minus the candidate's token's logit) next to
how far the two engines' logits differ at that step. A divergence is a near tie when that margin
is within twice the logit difference: rounding in another order can flip it, so it is reported
but not an error. Exit status 1 when any prompt diverges at a clear choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from trtllm_runtime import ModelRunner


def run(engine_dir: Path, prompts: list[list[int]], new_tokens: int) -> dict:
    with ModelRunner.from_dir(engine_dir) as runner:
        return runner.generate(prompts, max_new_tokens=new_tokens, end_id=-1, return_dict=True,
                               return_generation_logits=True)


def compare(ref_tokens: list[int], ref_logits: np.ndarray, got_tokens: list[int], got_logits: np.ndarray) -> dict:
    """One prompt: the first divergence (if any) and the logit margins around it."""
    vocab = ref_logits.shape[1]
    diff = np.abs(got_logits[:, :vocab] - ref_logits).max(axis=1)  # per step, over the vocabulary
    scale = float(np.abs(ref_logits).max())
    j = next((j for j, (a, b) in enumerate(zip(ref_tokens, got_tokens)) if a != b), None)
    result = {"match": j is None, "logit_scale": scale,
              "max_logit_diff_matched": float(diff[: len(ref_tokens) if j is None else j + 1].max())}
    if j is not None:
        margin = float(ref_logits[j, ref_tokens[j]] - ref_logits[j, got_tokens[j]])
        result.update(first_diverging_position=j, reference_token=ref_tokens[j], candidate_token=got_tokens[j],
                      reference_margin=margin, logit_diff_there=float(diff[j]),
                      near_tie=bool(margin <= 2 * diff[j]))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="engine dir, usually TP=1")
    p.add_argument("--candidate", type=Path, required=True, help="engine dir of the same model, e.g. TP=2")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--num-prompts", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args()

    vocab = json.loads((args.reference / "config.json").read_text())["model_config"]["vocab_size"]
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(max(1, args.prompt_len // 2), args.prompt_len + 1, args.num_prompts)
    prompts = [rng.integers(0, vocab, n).tolist() for n in lengths]
    ref = run(args.reference, prompts, args.new_tokens)
    got = run(args.candidate, prompts, args.new_tokens)

    results = [compare(ref["output_ids"][i], ref["generation_logits"][i], got["output_ids"][i],
                       got["generation_logits"][i]) for i in range(len(prompts))]
    for i, r in enumerate(results):
        if r["match"]:
            print(f"prompt {i}: {args.new_tokens} tokens identical (max logit diff {r['max_logit_diff_matched']:.4g}, "
                  f"logit scale {r['logit_scale']:.4g})")
        else:
            print(f"prompt {i}: MISMATCH at position {r['first_diverging_position']}: reference token "
                  f"{r['reference_token']}, candidate {r['candidate_token']}; reference margin "
                  f"{r['reference_margin']:.4g} vs logit diff {r['logit_diff_there']:.4g} there "
                  f"({'near tie' if r['near_tie'] else 'clear choice'})")
    report = {"reference": str(args.reference), "candidate": str(args.candidate), "new_tokens": args.new_tokens,
              "identical": sum(r["match"] for r in results), "prompts": len(results),
              "clear_divergences": sum(not r["match"] and not r["near_tie"] for r in results), "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["clear_divergences"] else 0


if __name__ == "__main__":
    sys.exit(main())
