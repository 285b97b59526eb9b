"""A tiny word-level tokenizer (128 tokens, ids fit the tiny models' vocabulary) with a chat
template, written as the tokenizer.json + tokenizer_config.json an engine dir carries.

Every token is one whitespace-free word and decoding joins words with spaces, so text maps
back to ids one to one: tests can compare texts and know the token ids agree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors

VOCAB_SIZE = 128
# Ids 1 and 2 are the tiny Llama configs' BOS and EOS.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
WORDS = ["user", "assistant", "system", "hello", "hi", "world", "the", "a", "is", "of", "and", "to", "you",
         "how", "are", "what", "capital", "france", "paris", "."]
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                 "{{ message['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def vocabulary() -> list[str]:
    words = SPECIAL_TOKENS + WORDS
    return words + [f"w{i}" for i in range(VOCAB_SIZE - len(words))]


def make_tokenizer() -> Tokenizer:
    vocab = {word: i for i, word in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return tok


def add_tokenizer(engine_dir: Path, out_dir: Path) -> Path:
    """A copy of `engine_dir` with the tiny tokenizer and chat template in it."""
    shutil.copytree(engine_dir, out_dir)
    make_tokenizer().save(str(out_dir / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
