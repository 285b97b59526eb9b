#!/usr/bin/env python3
"""Write a Hugging Face Llama checkpoint with random weights, shaped from a config: benchmarks
need a model of a real size, and performance does not depend on the weight values.

    python scripts/make_random_llama.py --out /tmp/llama_1b --preset 1b

Presets: 1b (hidden 2048, 16 layers, 32/8 heads, ffn 8192, vocab 32000) and 8b (the
Llama-3.1-8B shape). Weights are drawn on the GPU when there is one (fast), saved in bfloat16.
A character-level tokenizer.json goes with them, so that the checkpoint can be calibrated
(trtllm-convert --quant fp8 / int8_sq) and driven with text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESETS = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
}


def save_char_tokenizer(path: Path) -> None:
    """Printable ASCII -> ids 1..95, anything else 0: enough text for calibration of random weights."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, **{chr(32 + i): i + 1 for i in range(95)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tokenizer.save(str(path / "tokenizer.json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    p.add_argument("--max-position-embeddings", type=int, default=4096)
    args = p.parse_args()

    import torch
    import transformers

    config = transformers.LlamaConfig(**PRESETS[args.preset], max_position_embeddings=args.max_position_embeddings,
                                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out)
    save_char_tokenizer(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {args.preset}, {n / 1e9:.3f} B parameters, {2 * n / 1e9:.2f} GB in bfloat16")


if __name__ == "__main__":
    main()
