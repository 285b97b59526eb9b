"""config.pbtxt `parameters` of the Triton Python backend models in examples/triton.

Each model runs in its own process and imports this package; they read their parameters the
same way and say the same things about bad ones. `error` is the exception type to raise
(`pb_utils.TritonModelException` under Triton).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtllm_runtime.tokenizer import Tokenizer


def parameters(model_config: dict[str, Any], error: type[Exception]) -> dict[str, str]:
    """name -> string value; a `${...}` placeholder nobody filled in is an error naming it."""
    params = {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}
    for key, value in params.items():
        if value.startswith("${"):
            raise error(f"parameter {key} is not set (still {value}); edit config.pbtxt")
    return params


def flag(params: dict[str, str], key: str, default: bool, error: type[Exception]) -> bool:
    value = params.get(key, str(default)).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise error(f"parameter {key} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def tokenizer(params: dict[str, str], error: type[Exception]) -> tuple[Tokenizer, Path]:
    """The tokenizer of the engine dir in parameter `tokenizer_dir`, and that dir."""
    if not params.get("tokenizer_dir"):
        raise error("parameter tokenizer_dir (the engine dir) is not set")
    directory = Path(params["tokenizer_dir"])
    try:
        return Tokenizer.from_dir(directory), directory
    except FileNotFoundError as e:
        raise error(str(e)) from None
