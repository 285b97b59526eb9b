"""Tiny random-weight Hugging Face models of every supported family, built from configs (no downloads)."""

from __future__ import annotations

import transformers

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             max_position_embeddings=256)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def hf_config(family: str) -> "transformers.PretrainedConfig":
    if family == "llama3":
        return transformers.LlamaConfig(**SMALL, num_attention_heads=8, num_key_value_heads=4,
                                        rope_parameters=LLAMA3_ROPE, tie_word_embeddings=False)
    if family == "llama_tied":  # vocab 130 is not a multiple of 4: lm_head gets padded under TP
        return transformers.LlamaConfig(**{**SMALL, "vocab_size": 130}, num_attention_heads=4,
                                        num_key_value_heads=4, tie_word_embeddings=True)
    if family == "mistral":
        return transformers.MistralConfig(**SMALL, num_attention_heads=8, num_key_value_heads=4,
                                          sliding_window=None)
    if family == "qwen2":
        return transformers.Qwen2Config(**SMALL, num_attention_heads=8, num_key_value_heads=4)
    if family == "qwen3":  # head_dim * heads (128) != hidden (64)
        return transformers.Qwen3Config(**SMALL, num_attention_heads=8, num_key_value_heads=4, head_dim=16)
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                       bos_token_id=0, eos_token_id=0)
    raise AssertionError(family)


FAMILIES = ("llama3", "llama_tied", "mistral", "qwen2", "qwen3", "gpt2")


def save_char_tokenizer(path) -> None:
    """A character-level tokenizer.json (printable ASCII -> ids 1..95, 0 unknown) so calibration can
    tokenize text for the tiny models."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, **{chr(32 + i): i + 1 for i in range(95)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.save(str(path / "tokenizer.json"))


def trained_scale_llama(seed: int = 1, family: str = "llama3"):
    """A tiny Llama (by default GQA, llama3 rope; every GEMM dim a multiple of 16) with weights of a
    trained model's scale: norms near 1, the rest N(0, 0.15)."""
    import torch

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(family))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model


def save_trained_scale_llama(path, seed: int = 1, family: str = "llama3"):
    """trained_scale_llama(seed, family) and the char tokenizer, saved into `path`; returns path."""
    trained_scale_llama(seed, family).save_pretrained(path)
    save_char_tokenizer(path)
    return path
