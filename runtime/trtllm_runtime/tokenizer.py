"""The engine dir's tokenizer through the HF `tokenizers` library (no transformers, no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import tokenizers


class Tokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer, config: dict[str, Any]) -> None:
        self._tok = tokenizer
        self.config = config  # tokenizer_config.json: chat_template, special tokens

    @staticmethod
    def available(directory: str | Path) -> bool:
        return (Path(directory) / "tokenizer.json").is_file()

    @classmethod
    def from_dir(cls, directory: str | Path) -> "Tokenizer":
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no tokenizer.json; pass token ids instead of text")
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return cls(tokenizers.Tokenizer.from_file(str(path)), config)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """As HF's `tokenizer(text)`: the tokenizer's own post-processor decides on BOS."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)
