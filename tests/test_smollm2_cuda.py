"""SmolLM2-135M-Instruct, real weights, on the GPU: a bfloat16 engine built with --target cuda
against transformers on the same GGUF-derived weights.

- Greedy tokens identical to transformers in bfloat16 on the same GPU for the first 16 new
  tokens of each prompt.
- Perplexity on the fixed `pydoc_data.topics` slice within 1% of transformers in float32.
- Last-token logits within 5% of the float32 logit scale: bf16 weights and activations over 30
  layers (the CPU backend's bf16 engine measures about 1-2% on these prompts).

The GGUF comes from the cache (`TRTLLM_CACHE_DIR`); without it (an offline GPU machine) these skip.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from test_smollm2 import PROMPTS, engine_and_hf_perplexity
from trtllm_build.build import BuildConfig, build
from trtllm_build.convert import convert
from trtllm_runtime import ModelRunner
from trtllm_runtime.tokenizer import Tokenizer

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

GREEDY_PREFIX = 16


@pytest.fixture(scope="module")
def bf16_engine(smollm2_gguf, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smollm2_cuda")
    convert(smollm2_gguf, tmp / "ckpt", "bfloat16", 1)
    return build(tmp / "ckpt", tmp / "engine",
                 BuildConfig(max_batch_size=8, max_num_tokens=1024, max_seq_len=2048, target="cuda",
                             gather_context_logits=True))


def test_greedy_tokens_match_transformers_bf16_on_the_same_gpu(smollm2, bf16_engine):
    _, _, model = smollm2
    hf = copy.deepcopy(model).to(device="cuda", dtype=torch.bfloat16)
    tok = Tokenizer.from_dir(bf16_engine)
    prompts = [tok.encode(p) for p in PROMPTS]
    with ModelRunner.from_dir(bf16_engine) as runner:
        ours = runner.generate(prompts, max_new_tokens=GREEDY_PREFIX, min_new_tokens=GREEDY_PREFIX, end_id=-1)
    for prompt, ids, out in zip(PROMPTS, prompts, ours):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([ids], device="cuda"), max_new_tokens=GREEDY_PREFIX,
                              min_new_tokens=GREEDY_PREFIX, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(ids):].tolist()
        assert out == ref, prompt


def test_last_token_logits_close_to_transformers_fp32(smollm2, bf16_engine):
    _, _, model = smollm2
    tok = Tokenizer.from_dir(bf16_engine)
    prompts = [tok.encode(p) for p in PROMPTS]
    with ModelRunner.from_dir(bf16_engine) as runner:
        out = runner.generate(prompts, max_new_tokens=1, end_id=-1, return_dict=True, return_generation_logits=True)
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0, -1].numpy()
        ours = np.asarray(out["generation_logits"][i])[0, : ref.shape[0]]
        assert np.abs(ours - ref).max() <= 0.05 * np.abs(ref).max(), PROMPTS[i]


def test_perplexity_within_one_percent_of_transformers_fp32(smollm2, bf16_engine):
    _, _, model = smollm2
    ours, ref, _ = engine_and_hf_perplexity(bf16_engine, model)
    assert abs(ours - ref) / ref < 0.01, (ours, ref)
