"""SmolLM2-135M-Instruct, real weights: the CPU runtime against transformers (float32) on the
same GGUF-derived weights."""

from __future__ import annotations

import numpy as np
import pytest

from trtllm_build.build import BuildConfig, build
from trtllm_runtime import LLM, SamplingParams
from trtllm_runtime.cli.eval import perplexity, window_nll
from trtllm_runtime.model_runner import ModelRunner
from trtllm_runtime.tokenizer import Tokenizer

torch = pytest.importorskip("torch")

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a"]
NEW = 24
WINDOW = 256
EVAL_TOKENS = 1024


@pytest.fixture(scope="module")
def engine(smollm2, tmp_path_factory):
    ckpt, _, _ = smollm2
    return build(ckpt, tmp_path_factory.mktemp("smollm2_engine") / "engine",
                 BuildConfig(max_batch_size=8, max_num_tokens=1024, max_seq_len=2048, target="cpu",
                             gather_context_logits=True))


def eval_text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics)[:6])


def engine_and_hf_perplexity(engine, model) -> tuple[float, float, int]:
    """(engine perplexity, transformers' perplexity over the same windows, scored tokens) on the
    first EVAL_TOKENS of eval_text()."""
    ids = Tokenizer.from_dir(engine).encode(eval_text(), add_special_tokens=False)[:EVAL_TOKENS]
    with ModelRunner.from_dir(engine) as runner:
        ours, count = perplexity(runner, ids, WINDOW)
    return ours, hf_perplexity(model, ids, count), count


def hf_perplexity(model, ids: list[int], count: int) -> float:
    """transformers' perplexity over the same windows trtllm-eval scores (`count` scored tokens)."""
    total = 0.0
    for start in range(0, len(ids), WINDOW):
        window = ids[start:start + WINDOW]
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0].numpy()
        total += window_nll(logits, window)
    return float(np.exp(total / count))


def test_greedy_continuations_match_transformers(smollm2, engine):
    _, _, model = smollm2
    tok = Tokenizer.from_dir(engine)
    with LLM(engine) as llm:
        outs = llm.generate(PROMPTS, SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True))
    for prompt, out in zip(PROMPTS, outs):
        ids = tok.encode(prompt)
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert out.token_ids == ref, prompt
        assert out.text == tok.decode(ref)
    assert "Paris" in outs[0].text


def test_perplexity_is_within_half_a_percent_of_transformers(smollm2, engine):
    _, _, model = smollm2
    ours, ref, count = engine_and_hf_perplexity(engine, model)
    assert count == EVAL_TOKENS - EVAL_TOKENS // WINDOW
    assert abs(ours - ref) / ref < 0.005, (ours, ref)


def test_stop_strings_cut_the_text_and_finish_with_stop(engine):
    with LLM(engine) as llm:
        full = llm.generate(PROMPTS[0], SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True))
        assert "." in full[0].text  # the greedy continuation (" Paris.\n...") has a period to stop at
        cut = llm.generate(PROMPTS[0], SamplingParams(max_tokens=NEW, temperature=0.0, stop=["."]))
        kept = llm.generate(PROMPTS[0], SamplingParams(max_tokens=NEW, temperature=0.0, stop=["."],
                                                       include_stop_str_in_output=True))
    assert cut[0].text == full[0].text[: full[0].text.index(".")]
    assert kept[0].text == cut[0].text + "."
    assert cut[0].outputs[0].finish_reason == "stop"


def test_streaming_text_grows_to_the_final_text(engine):
    with LLM(engine) as llm:
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        steps = [o.text for o in llm.generate_stream(PROMPTS[2], params)]
        final = llm.generate(PROMPTS[2], params)[0].text
    assert steps[-1] == final and len(steps) == 12
    assert all(b.startswith(a) or "\ufffd" in a for a, b in zip(steps, steps[1:]))


def test_trtllm_eval_prints_one_json_line(engine, tmp_path, capsys):
    import json

    from trtllm_runtime.cli.eval import main

    text = tmp_path / "text.txt"
    text.write_text(eval_text())
    assert main(["perplexity", "--engine-dir", str(engine), "--text-file", str(text), "--window", "128",
                 "--max-tokens", "256"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["tokens"] == 256 - 2 and 1.0 < result["perplexity"] < 100.0 and result["seconds"] > 0
