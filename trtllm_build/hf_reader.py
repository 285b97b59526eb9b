"""Read a Hugging Face model directory: config.json, weights and tokenizer files.

Safetensors weights (single file or sharded with model.safetensors.index.json) need only
numpy; pytorch_model*.bin needs torch, imported only then.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np

from .convert_error import ConvertError
from .safetensors_io import SafetensorsError, read_safetensors

logger = logging.getLogger(__name__)

# name -> loader; loaders are lazy so that a model never sits in memory twice.
TensorLoaders = dict[str, Callable[[], np.ndarray]]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")


def read_hf_config(model_dir: Path) -> dict:
    """config.json, with eos/bos ids that only generation_config.json lists merged in."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{model_dir} has no config.json (expected a Hugging Face model "
                           f"directory or a .gguf file)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path} is not valid JSON: {e}") from None
    gen_path = model_dir / "generation_config.json"
    if gen_path.is_file():
        try:
            gen = json.loads(gen_path.read_text())
        except json.JSONDecodeError as e:
            raise ConvertError(f"{gen_path} is not valid JSON: {e}") from None
        # Llama 3 instruct lists its end-of-turn token only here.
        eos = _as_list(config.get("eos_token_id")) + _as_list(gen.get("eos_token_id"))
        config["eos_token_id"] = list(dict.fromkeys(eos))
        if config.get("bos_token_id") is None:
            config["bos_token_id"] = gen.get("bos_token_id")
    return config


def _as_list(v: int | list[int] | None) -> list[int]:
    if v is None:
        return []
    return [int(x) for x in v] if isinstance(v, list) else [int(v)]


def read_hf_weights(model_dir: Path) -> TensorLoaders:
    """Every tensor of the checkpoint, by its HF name."""
    files = _weight_files(model_dir, "model.safetensors.index.json", "*.safetensors")
    if files:
        return _merge(files, _safetensors_loaders)
    files = _weight_files(model_dir, "pytorch_model.bin.index.json", "pytorch_model*.bin")
    if files:
        return _merge(files, _torch_bin_loaders)
    raise ConvertError(f"{model_dir} has no *.safetensors or pytorch_model*.bin weights")


def _weight_files(model_dir: Path, index_name: str, pattern: str) -> list[Path]:
    index = model_dir / index_name
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ConvertError(f"{index} is not a valid index file ({e})") from None
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ConvertError(f"{index} names shard files that are missing: {missing}")
        return files
    # Mistral repos ship consolidated.safetensors (mistral-inference layout) next to the HF shards.
    return sorted(p for p in model_dir.glob(pattern) if not p.name.startswith("consolidated"))


def _merge(files: list[Path], loaders_of: Callable[[Path], TensorLoaders]) -> TensorLoaders:
    out: TensorLoaders = {}
    for f in files:
        for name, load in loaders_of(f).items():
            if name in out:
                raise ConvertError(f"tensor {name!r} appears in more than one weight file ({f})")
            out[name] = load
    return out


def _safetensors_loaders(path: Path) -> TensorLoaders:
    try:
        arrays = read_safetensors(path)
    except SafetensorsError as e:
        raise ConvertError(str(e)) from None
    return {name: (lambda a=a: a) for name, a in arrays.items()}


def _torch_bin_loaders(path: Path) -> TensorLoaders:
    try:
        import torch
    except ImportError:
        raise ConvertError(f"{path} is a PyTorch pickle; reading it needs torch, which is not "
                           f"installed (convert the model to safetensors, or install torch)") from None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def to_numpy(t: "torch.Tensor") -> np.ndarray:
        if t.dtype == torch.bfloat16:  # numpy has no bf16: move the bits
            return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.contiguous().numpy()

    return {name: (lambda t=t: to_numpy(t)) for name, t in state.items()}


def copy_tokenizer_files(model_dir: Path, out_dir: Path) -> list[str]:
    copied = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    for name in copied:
        shutil.copy2(model_dir / name, out_dir / name)
    if not any(n in copied for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        logger.warning("%s has no tokenizer files; the checkpoint will have none", model_dir)
    return copied
