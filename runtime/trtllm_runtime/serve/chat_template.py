"""Chat templates rendered as Hugging Face transformers renders them (`apply_chat_template`).

The template comes from the engine dir: a `chat_template.jinja` file (what transformers >= 4.43
saves) or the `chat_template` entry of tokenizer_config.json (a string, or a list of named
templates of which "default" is used). Rendering mirrors transformers: a sandboxed jinja2
environment with trim_blocks/lstrip_blocks, the `raise_exception` and `strftime_now` globals,
a `tojson` filter that keeps non-ASCII, and the tokenizer's special tokens as variables.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class ChatTemplateError(ValueError):
    """The template is missing, does not compile, or raised while rendering."""


def find_chat_template(directory: str | Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The engine dir's chat template source, or None if it has none."""
    path = Path(directory) / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    def __init__(self, source: str, tokenizer_config: dict[str, Any]) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from None
        self.special_tokens = {name: _token_text(tokenizer_config[name])
                               for name in _SPECIAL_TOKENS if tokenizer_config.get(name) is not None}

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text; ChatTemplateError (e.g. the template's raise_exception) on failure."""
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self.special_tokens)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template failed on these messages: {e}") from None


def _token_text(token: Any) -> str:
    """tokenizer_config.json stores a special token as a string or as a serialized AddedToken."""
    return token["content"] if isinstance(token, dict) else str(token)
