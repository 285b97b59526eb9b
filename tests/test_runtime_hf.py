"""The CPU runtime against Hugging Face transformers (float32 reference), every family."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_hf import FAMILIES
from trtllm_runtime import ModelRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 17, 99, 3, 42, 8, 77, 1, 64, 23, 11], [7, 2, 90], [33]]
NEW_TOKENS = 32


def hf_generate(model_dir, prompt):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        context = model(torch.tensor([prompt])).logits[0].numpy()
        out = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=0, eos_token_id=None)
    tokens = out.sequences[0, len(prompt):].tolist()
    return context, tokens, np.stack([l[0].numpy() for l in out.logits])


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_greedy_tokens_match_hf(hf_models, tiny_engines, family):
    model_dir, _ = hf_models[family]
    with ModelRunner.from_dir(tiny_engines[family]) as runner:
        out = runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                              return_context_logits=True, return_generation_logits=True)
    for i, prompt in enumerate(PROMPTS):
        context, tokens, generation = hf_generate(model_dir, prompt)
        scale = np.abs(context).max()
        # float32 on both sides; different summation orders give ~1e-6 of the logit scale
        assert np.abs(out["context_logits"][i] - context).max() <= 1e-4 * scale
        assert out["output_ids"][i] == tokens, f"prompt {i}"
        assert np.abs(out["generation_logits"][i] - generation).max() <= 1e-4 * np.abs(generation).max()
