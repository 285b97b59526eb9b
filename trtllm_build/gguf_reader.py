"""Read a GGUF file (llama.cpp) as if it were a Hugging Face checkpoint.

`read_gguf` returns an HF-style config dict and tensors under HF names, dequantized and with
llama.cpp's rope permutation of q/k undone, so the converter treats both inputs alike.
Supported GGUF architectures: llama (also Mistral, which llama.cpp stores as llama), qwen2, qwen3.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .convert_error import ConvertError
from .hf_reader import TensorLoaders

logger = logging.getLogger(__name__)

# GGUF general.architecture -> (HF model_type, HF architecture)
_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
}
# llama.cpp's tensor names (gguf.constants.TENSOR_NAMES) -> HF names.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(.+)")
_REQUIRED = object()


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise ConvertError("reading .gguf files needs the 'gguf' package (pip install gguf)") from None
    return gguf


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    return gguf_name  # unknown: the converter reports it as unused


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k rows (convert_hf_to_gguf.py, LlamaModel.permute).

    llama.cpp reorders each head's rows from HF's rotate-half layout (first half, second
    half) to interleaved pairs for its rope kernel: reshape(n_head, 2, d/2) -> swap -> flatten.
    The inverse views rows as (n_head, d/2, 2) and swaps back. Biases are permuted alike.
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class GGUFModel:
    config: dict[str, Any]      # HF config.json layout (transformers 4 keys)
    tensors: TensorLoaders      # HF names, dequantized to float32 on load
    has_tokenizer: bool         # tokenizer.ggml.* metadata present


def read_gguf(path: Path) -> GGUFModel:
    """An HF view of a GGUF file: config dict and HF-named tensor loaders."""
    gguf = _import_gguf()
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:  # bad magic, truncated file
        raise ConvertError(f"{path} is not a readable GGUF file: {e}") from None

    def meta(key: str, default: Any = _REQUIRED) -> Any:
        """A scalar or string metadata value (not ReaderField.contents(): newer gguf only)."""
        field = reader.fields.get(key)
        if field is None:
            if default is _REQUIRED:
                raise ConvertError(f"{path}: GGUF metadata key {key!r} is missing")
            return default
        raw = field.parts[field.data[0]]
        if field.types[0] == gguf.GGUFValueType.STRING:
            return bytes(raw).decode("utf-8")
        return raw[0].item()

    arch = meta("general.architecture")
    if arch not in _ARCHITECTURES:
        raise ConvertError(f"{path}: GGUF architecture {arch!r} is not supported; "
                           f"supported: {sorted(_ARCHITECTURES)}")
    model_type, hf_arch = _ARCHITECTURES[arch]
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        # Llama 3.1's llama3 rope scaling survives in GGUF only as precomputed per-frequency
        # factors; recovering factor/low/high from them is not exact, so refuse.
        raise ConvertError(f"{path}: GGUF rope_freqs (llama3 rope scaling) is not supported; "
                           f"convert from the Hugging Face checkpoint instead")

    hidden = meta(f"{arch}.embedding_length")
    heads = meta(f"{arch}.attention.head_count")
    kv_heads = meta(f"{arch}.attention.head_count_kv", heads)
    head_dim = meta(f"{arch}.attention.key_length", hidden // heads)
    rope_dim = meta(f"{arch}.rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise ConvertError(f"{path}: partial rotary embedding (rope.dimension_count {rope_dim} != "
                           f"head_dim {head_dim}) is not supported")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab_size = meta(f"{arch}.vocab_size", len(tokens.data) if tokens is not None else None)
    if vocab_size is None:
        raise ConvertError(f"{path}: cannot tell the vocab size ({arch}.vocab_size and "
                           f"tokenizer.ggml.tokens are both missing)")
    config: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [hf_arch],
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": meta(f"{arch}.feed_forward_length"),
        "num_hidden_layers": meta(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": meta(f"{arch}.context_length"),
        "rms_norm_eps": meta(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": meta(f"{arch}.rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_output.bias" in names,
        "bos_token_id": meta("tokenizer.ggml.bos_token_id", None),
        "eos_token_id": meta("tokenizer.ggml.eos_token_id", None),
    }
    scaling = meta(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        config["rope_scaling"] = {"rope_type": scaling, "factor": meta(f"{arch}.rope.scaling.factor", 1.0)}

    logger.info("GGUF %s: architecture %s, %d tensors (%s)", path.name, arch, len(reader.tensors),
                ", ".join(f"{n} {k}" for k, n in Counter(t.tensor_type.name for t in reader.tensors).items()))

    def load(t: Any) -> np.ndarray:
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        expected = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        if w.shape != expected:
            raise ConvertError(f"{path}: tensor {t.name!r} dequantized to {w.shape}, expected {expected}")
        if arch == "llama":
            if ".attn_q." in t.name:
                w = unpermute_rope(w, heads)
            elif ".attn_k." in t.name:
                w = unpermute_rope(w, kv_heads)
        return w

    return GGUFModel(config, {_hf_name(t.name): (lambda t=t: load(t)) for t in reader.tensors},
                     has_tokenizer="tokenizer.ggml.model" in reader.fields)


def save_gguf_tokenizer(path: Path, out_dir: Path) -> list[str]:
    """Write HF tokenizer files for the GGUF's embedded tokenizer (transformers converts it)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConvertError("converting a GGUF tokenizer needs transformers (with torch): "
                           "pip install transformers torch") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ImportError, ValueError, KeyError) as e:
        raise ConvertError(f"{path}: transformers could not convert the GGUF tokenizer: {e}") from None
    return [Path(p).name for p in tokenizer.save_pretrained(str(out_dir))]
