"""Convert a Hugging Face checkpoint or a GGUF file into a checkpoint dir.

    config.json            ModelConfig (trtllm_build.config)
    rank{N}.safetensors    canonical weight names (see config.py), sharded for tensor parallelism
    tokenizer files        copied (HF) or converted by transformers (GGUF)

Each family is a table from canonical names to the HF tensor names (STYLE.md rule 3); GGUF
files are read as HF-named tensors by gguf_reader, so they share the tables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from .config import DTYPES, ConfigError, Mapping, ModelConfig, RopeConfig
from .convert_error import ConvertError
from .hf_reader import TensorLoaders, copy_tokenizer_files, read_hf_config, read_hf_weights
from .safetensors_io import SafetensorsError, read_safetensors, write_safetensors

if TYPE_CHECKING:
    from .quantization.options import QuantOptions
    from .quantization.quantize_weights import CalibStats

__all__ = ["ConvertError", "FAMILIES", "checkpoint_shapes", "checkpoint_tensors", "convert", "convert_weights",
           "linear_groups", "load_checkpoint", "model_config_from_hf"]

logger = logging.getLogger(__name__)

NP_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
             "bfloat16": np.dtype(ml_dtypes.bfloat16)}


@dataclass(frozen=True)
class Source:
    """Where a canonical tensor comes from: an HF name template ({i} = layer index)."""
    name: str
    transpose: bool = False         # GPT-2's Conv1D stores [in, out]; we want [out, in]
    fused_qkv: int | None = None    # 0/1/2: the q/k/v row block of a fused [q; k; v] tensor


def _llama_names() -> dict[str, Source]:
    names = {"embed.weight": "model.embed_tokens.weight",
             "final_norm.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight",
             "layers.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
             "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
             "layers.{i}.attn.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
             "layers.{i}.attn.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight"}
    for ours, theirs in (("attn.q", "self_attn.q_proj"), ("attn.k", "self_attn.k_proj"),
                         ("attn.v", "self_attn.v_proj"), ("attn.o", "self_attn.o_proj"),
                         ("mlp.gate", "mlp.gate_proj"), ("mlp.up", "mlp.up_proj"),
                         ("mlp.down", "mlp.down_proj")):
        for kind in ("weight", "bias"):
            names[f"layers.{{i}}.{ours}.{kind}"] = f"model.layers.{{i}}.{theirs}.{kind}"
    return {k: Source(v) for k, v in names.items()}


_GPT2_NAMES = {
    "embed.weight": Source("transformer.wte.weight"),
    "pos_embed.weight": Source("transformer.wpe.weight"),
    "final_norm.weight": Source("transformer.ln_f.weight"),
    "final_norm.bias": Source("transformer.ln_f.bias"),
    "lm_head.weight": Source("lm_head.weight"),
    "layers.{i}.attn_norm.weight": Source("transformer.h.{i}.ln_1.weight"),
    "layers.{i}.attn_norm.bias": Source("transformer.h.{i}.ln_1.bias"),
    "layers.{i}.mlp_norm.weight": Source("transformer.h.{i}.ln_2.weight"),
    "layers.{i}.mlp_norm.bias": Source("transformer.h.{i}.ln_2.bias"),
    **{f"layers.{{i}}.attn.{p}.weight": Source("transformer.h.{i}.attn.c_attn.weight", True, n)
       for n, p in enumerate("qkv")},
    **{f"layers.{{i}}.attn.{p}.bias": Source("transformer.h.{i}.attn.c_attn.bias", False, n)
       for n, p in enumerate("qkv")},
    "layers.{i}.attn.o.weight": Source("transformer.h.{i}.attn.c_proj.weight", True),
    "layers.{i}.attn.o.bias": Source("transformer.h.{i}.attn.c_proj.bias"),
    "layers.{i}.mlp.fc.weight": Source("transformer.h.{i}.mlp.c_fc.weight", True),
    "layers.{i}.mlp.fc.bias": Source("transformer.h.{i}.mlp.c_fc.bias"),
    "layers.{i}.mlp.proj.weight": Source("transformer.h.{i}.mlp.c_proj.weight", True),
    "layers.{i}.mlp.proj.bias": Source("transformer.h.{i}.mlp.c_proj.bias"),
}


# Canonical name template -> HF source, by ModelConfig.architecture.
NAME_TABLES: dict[str, dict[str, Source]] = {"llama": _llama_names(), "gpt2": _GPT2_NAMES}


@dataclass(frozen=True)
class Family:
    architecture: str               # ModelConfig.architecture, which picks the name table
    qkv_bias: bool | None = None    # fixed by the family; None: the config's attention_bias
    qk_norm: bool = False


FAMILIES: dict[str, Family] = {     # by HF model_type
    "llama": Family("llama"),
    "mistral": Family("llama"),
    "qwen2": Family("llama", qkv_bias=True),    # q/k/v biased, o not
    "qwen3": Family("llama", qk_norm=True),
    "gpt2": Family("gpt2"),
}
# Present in some HF checkpoints, not weights: rope caches, GPT-2's causal-mask buffers.
_IGNORED = re.compile(r".*(rotary_emb\.inv_freq|(^|\.)attn\.(masked_)?bias)$")
_LAYER = re.compile(r"layers\.(\d+)\.(.+)")


# ---------------------------------------------------------------------------- config

def _required(hf: dict[str, Any], key: str) -> Any:
    if hf.get(key) is None:
        raise ConvertError(f"model config is missing {key!r}")
    return hf[key]


def _rope_config(hf: dict[str, Any]) -> RopeConfig:
    # transformers 5 writes rope_parameters (theta inside); older configs rope_theta + rope_scaling.
    params = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return RopeConfig(theta=theta)
    if rope_type == "linear":
        return RopeConfig(theta=theta, scaling_type="linear", factor=float(_required(params, "factor")))
    if rope_type == "llama3":
        return RopeConfig(theta=theta, scaling_type="llama3",
                          factor=float(_required(params, "factor")),
                          low_freq_factor=float(_required(params, "low_freq_factor")),
                          high_freq_factor=float(_required(params, "high_freq_factor")),
                          original_max_position_embeddings=int(
                              _required(params, "original_max_position_embeddings")))
    raise ConvertError(f"rope type {rope_type!r} is not supported; supported: default, linear, llama3")


def _resolve_dtype(dtype: str | None, hf: dict[str, Any]) -> str:
    if dtype in (None, "auto"):
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "bfloat16"
        if dtype not in DTYPES:
            raise ConvertError(f"model config dtype {dtype!r} is not supported; pass --dtype "
                               f"(one of {DTYPES})")
    return dtype


def _eos_ids(v: int | list[int] | None) -> list[int]:
    if v is None:
        return []
    return [int(x) for x in v] if isinstance(v, list) else [int(v)]


def _llama_fields(hf: dict[str, Any], family: Family) -> dict[str, Any]:
    if hf.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"hidden_act {hf['hidden_act']!r} is not supported for "
                           f"{hf['model_type']}; expected 'silu'")
    heads = int(_required(hf, "num_attention_heads"))
    hidden = int(_required(hf, "hidden_size"))
    max_pos = int(_required(hf, "max_position_embeddings"))
    window = hf.get("sliding_window")
    if window and (hf.get("use_sliding_window") or hf["model_type"] == "mistral") and window < max_pos:
        logger.warning("sliding_window %d is not applied (full attention): outputs differ from "
                       "the reference beyond %d tokens", window, window)
    attention_bias = bool(hf.get("attention_bias", False))
    return dict(
        hidden_size=hidden,
        intermediate_size=int(_required(hf, "intermediate_size")),
        num_hidden_layers=int(_required(hf, "num_hidden_layers")),
        num_attention_heads=heads,
        num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hidden // heads),
        max_position_embeddings=max_pos,
        norm_type="rms_norm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        hidden_act="silu", gated_mlp=True, position_embedding="rope", rope=_rope_config(hf),
        qkv_bias=attention_bias if family.qkv_bias is None else family.qkv_bias,
        attn_out_bias=attention_bias, mlp_bias=bool(hf.get("mlp_bias", False)),
        qk_norm=family.qk_norm,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def _gpt2_fields(hf: dict[str, Any]) -> dict[str, Any]:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ConvertError(f"gpt2 activation_function {act!r} is not supported; expected gelu_new")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ConvertError("gpt2 with scale_attn_by_inverse_layer_idx or without scale_attn_weights "
                           "is not supported")
    hidden, heads = int(_required(hf, "n_embd")), int(_required(hf, "n_head"))
    return dict(
        hidden_size=hidden,
        intermediate_size=int(hf.get("n_inner") or 4 * hidden),
        num_hidden_layers=int(_required(hf, "n_layer")),
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
        max_position_embeddings=int(_required(hf, "n_positions")),
        norm_type="layer_norm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        hidden_act="gelu_tanh", gated_mlp=False, position_embedding="learned",
        qkv_bias=True, attn_out_bias=True, mlp_bias=True,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


def family_of(hf: dict[str, Any]) -> Family:
    family = FAMILIES.get(hf.get("model_type"))
    if family is None:
        raise ConvertError(f"model_type {hf.get('model_type')!r} ({', '.join(hf.get('architectures') or [])}) "
                           f"is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return family


def model_config_from_hf(hf: dict[str, Any], dtype: str | None = None, tp_size: int = 1) -> ModelConfig:
    """ModelConfig from an HF config.json dict (either transformers 4 or 5 layout)."""
    family = family_of(hf)
    fields = _gpt2_fields(hf) if family.architecture == "gpt2" else _llama_fields(hf, family)
    bos = hf.get("bos_token_id")
    return ModelConfig(
        architecture=family.architecture,
        hf_architecture=(hf.get("architectures") or [hf["model_type"]])[0],
        dtype=_resolve_dtype(dtype, hf),
        vocab_size=int(_required(hf, "vocab_size")),
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=_eos_ids(hf.get("eos_token_id")),
        mapping=Mapping(world_size=tp_size, tp_size=tp_size),
        **fields,
    )


# ---------------------------------------------------------------------------- weights

@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]      # unsharded
    axis: int | None            # TP split axis; None: replicated
    dtype: str                  # the model dtype, or a quantized tensor's own dtype


def linear_groups(config: ModelConfig) -> list[list[str]]:
    """The quantizable linears of every layer, grouped by the input they read (q/k/v, gate/up, ...)."""
    mlp = [["mlp.gate", "mlp.up"], ["mlp.down"]] if config.gated_mlp else [["mlp.fc"], ["mlp.proj"]]
    groups = [[f"layers.{i}.{name}" for name in group]
              for i in range(config.num_hidden_layers) for group in [["attn.q", "attn.k", "attn.v"], ["attn.o"], *mlp]]
    return groups + [["lm_head"]] if config.quantization.quantize_lm_head else groups


def _layout(config: ModelConfig) -> dict[str, TensorSpec]:
    """Canonical name -> its unsharded shape, TP split axis and dtype."""
    from .quantization.schemes import linear_tensors, scheme_of, tp_split_axis

    h, hd, inter, dt = config.hidden_size, config.head_dim, config.intermediate_size, config.dtype
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    qc = config.quantization
    scheme = scheme_of(qc.quant_algo) if qc.quant_algo else None
    norm = ("weight", "bias") if config.norm_type == "layer_norm" else ("weight",)
    out: dict[str, TensorSpec] = {"embed.weight": TensorSpec((config.vocab_size, h), None, dt)}
    if config.position_embedding == "learned":
        out["pos_embed.weight"] = TensorSpec((config.max_position_embeddings, h), None, dt)
    # Column-parallel layers split output rows (whole heads per rank, heads are contiguous
    # rows); row-parallel layers split input columns and their bias is added once, replicated.
    column = {"attn.q": q, "attn.k": kv, "attn.v": kv}
    row = {"attn.o": q}
    if config.gated_mlp:
        column |= {"mlp.gate": inter, "mlp.up": inter}
        row["mlp.down"] = inter
    else:
        column["mlp.fc"] = inter
        row["mlp.proj"] = inter
    biased = {"attn.q": config.qkv_bias, "attn.k": config.qkv_bias, "attn.v": config.qkv_bias,
              "attn.o": config.attn_out_bias}

    def linear(prefix: str, n: int, k: int, parallel: str, bias: bool) -> None:
        if scheme is None:
            out[f"{prefix}.weight"] = TensorSpec((n, k), 0 if parallel == "column" else 1, dt)
        else:
            for role, (shape, dtype) in linear_tensors(scheme, n, k, dt, qc.group_size).items():
                out[f"{prefix}.{role}"] = TensorSpec(shape, tp_split_axis(role, scheme, parallel), dtype)
        if bias:
            out[f"{prefix}.bias"] = TensorSpec((n,) if parallel == "column" else (h,),
                                               0 if parallel == "column" else None, dt)

    for i in range(config.num_hidden_layers):
        p = f"layers.{i}."
        for kind in norm:
            out[f"{p}attn_norm.{kind}"] = TensorSpec((h,), None, dt)
        for name, rows in column.items():
            linear(p + name, rows, h, "column", biased.get(name, config.mlp_bias))
        if config.qk_norm:  # per-head RMSNorm weights: the same on every rank
            out[f"{p}attn.q_norm.weight"] = TensorSpec((hd,), None, dt)
            out[f"{p}attn.k_norm.weight"] = TensorSpec((hd,), None, dt)
        if qc.kv_cache_quant_algo:
            out[f"{p}attn.kv_scale"] = TensorSpec((1,), None, "float32")
        for kind in norm:
            out[f"{p}mlp_norm.{kind}"] = TensorSpec((h,), None, dt)
        for name, cols in row.items():
            linear(p + name, h, cols, "row", biased.get(name, config.mlp_bias))
    for kind in norm:
        out[f"final_norm.{kind}"] = TensorSpec((h,), None, dt)
    # Rows padded to vocab_size_padded (zeros). Tied embeddings on one rank: the builder reuses
    # embed, unless lm_head is quantized (then it is a quantized copy of embed).
    if qc.quantize_lm_head:
        linear("lm_head", config.vocab_size_padded, h, "column", False)
    elif not (config.tie_word_embeddings and config.tp_size == 1):
        out["lm_head.weight"] = TensorSpec((config.vocab_size_padded, h), 0, dt)
    return out


def checkpoint_tensors(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Canonical name -> (shape, dtype) of that tensor in each rank{N}.safetensors."""
    tp = config.tp_size
    tensors = {}
    for name, spec in _layout(config).items():
        shape = spec.shape
        if spec.axis is not None:
            shape = shape[:spec.axis] + (shape[spec.axis] // tp,) + shape[spec.axis + 1:]
        tensors[name] = (shape, spec.dtype)
    return tensors


def checkpoint_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of that tensor in each rank{N}.safetensors."""
    return {name: shape for name, (shape, _) in checkpoint_tensors(config).items()}


def _find(tensors: TensorLoaders, name: str) -> str | None:
    # The original GPT-2 checkpoints have no "transformer." prefix.
    for candidate in (name, name.removeprefix("transformer."), name.removeprefix("model.")):
        if candidate in tensors:
            return candidate
    return None


def _source_of(name: str, config: ModelConfig) -> tuple[Source, str]:
    """(Source, HF name) for a canonical name."""
    if name == "lm_head.weight" and config.tie_word_embeddings:
        name = "embed.weight"
    m = _LAYER.fullmatch(name)
    template, layer = (f"layers.{{i}}.{m.group(2)}", m.group(1)) if m else (name, None)
    src = NAME_TABLES[config.architecture].get(template)
    if src is None:
        raise ConvertError(f"the {config.architecture} name table has no source for {name!r}")
    return src, src.name.format(i=layer)


def _load(name: str, config: ModelConfig, tensors: TensorLoaders, used: set[str]) -> np.ndarray:
    src, hf_name = _source_of(name, config)
    found = _find(tensors, hf_name)
    if found is None:
        raise ConvertError(f"tensor {hf_name!r} (for {name}) is missing from the model")
    used.add(found)
    w = tensors[found]()
    if src.transpose:
        w = w.T
    if src.fused_qkv is not None:
        q = config.num_attention_heads * config.head_dim
        kv = config.num_key_value_heads * config.head_dim
        if w.shape[0] != q + 2 * kv:
            raise ConvertError(f"tensor {found!r} has {w.shape[0]} fused q/k/v rows; expected "
                               f"{q} + {kv} + {kv} from the config")
        start = (0, q, q + kv)[src.fused_qkv]
        w = w[start:start + (q, kv, kv)[src.fused_qkv]]
    return w


def _load_padded(name: str, config: ModelConfig, tensors: TensorLoaders, used: set[str]) -> np.ndarray:
    """_load, with lm_head's vocab rows padded with zeros to vocab_size_padded."""
    w = _load(name, config, tensors, used)
    pad = config.vocab_size_padded - config.vocab_size
    if name == "lm_head.weight" and pad and w.shape[0] == config.vocab_size:
        w = np.concatenate([w, np.zeros((pad,) + tuple(w.shape[1:]), w.dtype)])
    return w


def _cast(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if w.dtype == dtype:
        return np.ascontiguousarray(w)
    # float32 holds every fp16 and bf16 value exactly, so this rounds once.
    return np.ascontiguousarray(w.astype(np.float32).astype(dtype))


def _store(ranks: list[dict[str, np.ndarray]], name: str, w: np.ndarray, axis: int | None) -> None:
    if axis is None:
        shared = np.ascontiguousarray(w)  # replicated: one array shared by all ranks
        for r in range(len(ranks)):
            ranks[r][name] = shared
    else:
        for r, part in enumerate(np.split(w, len(ranks), axis=axis)):
            ranks[r][name] = np.ascontiguousarray(part)


def convert_weights(config: ModelConfig, tensors: TensorLoaders, calib: "CalibStats | None" = None,
                    prequantized: Any = None) -> list[dict[str, np.ndarray]]:
    """Map, check, cast, quantize (config.quantization, with `calib` statistics) and shard every
    tensor; one canonical-name dict per TP rank. `prequantized` (an imported export) supplies the
    quantized linears (`.group(names)`) and KV scales (`.kv_scale(layer)`) instead, and names the
    source tensors it read (`.read_names`)."""
    dtype, tp = NP_DTYPES[config.dtype], config.tp_size
    layout = _layout(config)
    ranks: list[dict[str, np.ndarray]] = [{} for _ in range(tp)]
    used: set[str] = set()
    qc = config.quantization
    groups = linear_groups(config) if qc.quant_algo else []
    quantized = {prefix for group in groups for prefix in group}
    streamed = [name for name in layout
                if name.rsplit(".", 1)[0] not in quantized or name.endswith(".bias")]
    streamed = [name for name in streamed if not name.endswith(".kv_scale")]
    report_every = max(1, len(streamed) // 10)
    for n, name in enumerate(streamed, 1):
        spec = layout[name]
        w = _load_padded(name, config, tensors, used)
        if tuple(w.shape) != spec.shape:
            _, hf_name = _source_of(name, config)
            raise ConvertError(f"tensor {hf_name!r} (for {name}) has shape {tuple(w.shape)}; "
                               f"expected {spec.shape} from the config")
        _store(ranks, name, _cast(w, dtype), spec.axis)
        logger.debug("%s <- %s %s", name, tuple(w.shape), w.dtype)
        if n % report_every == 0 or n == len(streamed):
            logger.info("converted %d/%d tensors", n, len(streamed))
    if groups or qc.kv_cache_quant_algo:
        _quantize_linears(config, tensors, used, layout, groups, calib, ranks, prequantized)
        if prequantized is not None:
            used.update(prequantized.read_names)
    if config.tie_word_embeddings:  # some tied checkpoints store lm_head as well; it equals embed
        used.update(k for k in ("lm_head.weight",) if k in tensors)
    unused = sorted(k for k in set(tensors) - used if not _IGNORED.fullmatch(k))
    if unused:
        logger.warning("%d source tensors were not used: %s%s", len(unused), ", ".join(unused[:8]),
                       " ..." if len(unused) > 8 else "")
    return ranks


def _store_quantized(ranks: list[dict[str, np.ndarray]], layout: dict[str, TensorSpec],
                     out: dict[str, np.ndarray]) -> None:
    for name, value in out.items():
        spec = layout.get(name)
        if spec is None:
            raise ConvertError(f"quantized tensor {name} is not part of this scheme's checkpoint")
        if tuple(value.shape) != spec.shape or value.dtype.name != spec.dtype:
            raise ConvertError(f"quantized {name} is {value.shape} {value.dtype}; expected {spec.shape} {spec.dtype}")
        _store(ranks, name, value, spec.axis)


def _unpacked_shape(spec: TensorSpec) -> tuple[int, int]:
    """The float shape of a quantized linear weight's layout entry (uint8 packs two int4 values)."""
    return spec.shape[0], spec.shape[1] * (2 if spec.dtype == "uint8" else 1)


def _quantize_threads(layout: dict[str, TensorSpec], groups: list[list[str]]) -> int:
    """Threads for _quantize_linears: up to 4 (and the cores), as many as the free memory holds
    groups at once (a group's float32 weights and the quantizer's temporaries: ~16 bytes a weight)."""
    if not groups:
        return 1

    def weights_of(group: list[str]) -> int:
        return sum(rows * cols for rows, cols in (_unpacked_shape(layout[f"{prefix}.weight"]) for prefix in group))
    largest = 16 * max(weights_of(g) for g in groups)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: one at a time, as before
        return 1
    return max(1, min(4, os.cpu_count() or 1, free // max(1, largest)))


def _quantize_linears(config: ModelConfig, tensors: TensorLoaders, used: set[str], layout: dict[str, TensorSpec],
                      groups: list[list[str]], calib: "CalibStats | None", ranks: list[dict[str, np.ndarray]],
                      prequantized: Any = None) -> None:
    """Quantize each group of linears that read one input, then shard the results."""
    from .quantization.quantize_weights import kv_cache_scale, quantize_group
    from .quantization.schemes import scheme_of

    qc = config.quantization
    scheme = scheme_of(qc.quant_algo) if groups else None
    dtype = NP_DTYPES[config.dtype]
    if prequantized is not None:
        for group in groups:
            _store_quantized(ranks, layout, prequantized.group(group))
            used.update(found for prefix in group
                        if (found := _find(tensors, _source_of(f"{prefix}.weight", config)[1])) is not None)
    else:
        def quantize(group: list[str]) -> dict[str, np.ndarray]:
            weights = []
            for prefix in group:
                w = _load_padded(f"{prefix}.weight", config, tensors, used)
                expected = _unpacked_shape(layout[f"{prefix}.weight"])
                if tuple(w.shape) != expected:
                    raise ConvertError(f"tensor for {prefix}.weight has shape {tuple(w.shape)}; expected {expected}")
                weights.append(w.astype(np.float32))
            stats = calib.inputs.get(group[0]) if calib is not None else None
            return quantize_group(scheme, group, weights, stats, dtype=dtype, group_size=qc.group_size,
                                  smoothquant_alpha=qc.smoothquant_alpha if qc.smoothquant_alpha is not None else 0.5)

        # Groups quantize on a few threads (numpy releases the GIL in its loops; an 8B model took
        # ~2 minutes on one core) and are stored in order, so the checkpoint does not depend on it.
        with ThreadPoolExecutor(_quantize_threads(layout, groups)) as pool:
            for n, out in enumerate(pool.map(quantize, groups), 1):
                _store_quantized(ranks, layout, out)
                if n % max(1, len(groups) // 10) == 0 or n == len(groups):
                    logger.info("quantized %d/%d linear groups (%s)", n, len(groups), qc.quant_algo)
    if qc.kv_cache_quant_algo:
        for i in range(config.num_hidden_layers):
            if prequantized is not None:
                _store(ranks, f"layers.{i}.attn.kv_scale", prequantized.kv_scale(i), None)
                continue
            if calib is None or i not in calib.kv_amax:
                raise ConvertError(f"the FP8 KV cache needs calibration statistics of layer {i}")
            _store(ranks, f"layers.{i}.attn.kv_scale", kv_cache_scale(calib.kv_amax[i]), None)


# ---------------------------------------------------------------------------- output

def _check_output_dir(output_dir: Path, model_dir: Path) -> None:
    out, src = output_dir.resolve(), model_dir.resolve()
    if out == src or out in src.parents:
        raise ConvertError(f"output dir {output_dir} would contain the model {model_dir}; choose another")
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ConvertError(f"output dir {output_dir} exists and is not a directory")
    if any(output_dir.iterdir()):
        try:
            ours = "format_version" in json.loads((output_dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            ours = False
        if not ours:  # only ever replace a checkpoint dir we wrote, never e.g. a model dir
            raise ConvertError(f"output dir {output_dir} is not empty and is not a checkpoint dir; "
                               f"refusing to replace it")


def _replace_dir(tmp: Path, output_dir: Path) -> None:
    if output_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        output_dir.rename(old / output_dir.name)
        tmp.rename(output_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(output_dir)


def _read_model(model_dir: Path) -> tuple[dict[str, Any], TensorLoaders, Callable[[Path], list[str]]]:
    """(HF config dict, HF-named tensors, function writing the tokenizer files into a dir)."""
    if not model_dir.exists():
        raise ConvertError(f"model dir {model_dir} does not exist")
    if model_dir.is_dir():
        return (read_hf_config(model_dir), read_hf_weights(model_dir),
                lambda out: copy_tokenizer_files(model_dir, out))
    if model_dir.suffix != ".gguf":
        raise ConvertError(f"{model_dir} is a file but not a .gguf; expected a Hugging Face "
                           f"model directory or a .gguf file")
    from .gguf_reader import read_gguf, save_gguf_tokenizer
    gguf = read_gguf(model_dir)
    if gguf.has_tokenizer:
        return gguf.config, gguf.tensors, lambda out: save_gguf_tokenizer(model_dir, out)
    logger.warning("%s has no tokenizer metadata; the checkpoint will have no tokenizer files", model_dir)
    return gguf.config, gguf.tensors, lambda out: []


def convert(model_dir: Path | str, output_dir: Path | str, dtype: str | None = None,
            tp_size: int = 1, quant: "QuantOptions | None" = None) -> ModelConfig:
    """Convert an HF model dir or a .gguf file ("default": the default model) into output_dir.

    dtype None or "auto" takes the model config's dtype (bfloat16 if it names none). `quant`
    quantizes the linears and/or the KV cache (calibrating with torch where the scheme needs it).
    A ModelOpt export (hf_quant_config.json, or a TensorRT-LLM checkpoint) is read with its
    scales as they are. The output dir appears complete or not at all; an existing checkpoint
    dir there is replaced. Raises ConvertError or ConfigError with a one-line message.
    """
    start = time.monotonic()
    if str(model_dir) == "default":
        from .default_model import default_model_path
        model_dir = default_model_path()
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    from .quantization import modelopt_import

    export = modelopt_import.detect(model_dir)
    if export is not None:
        if quant is not None and (quant.scheme or quant.kv_cache):
            raise ConvertError(f"{model_dir} is already quantized ({export}); drop --quant / --kv-cache")
        _check_output_dir(output_dir, model_dir)
        return _write_checkpoint(output_dir, model_dir, *modelopt_import.read(model_dir, export, dtype, tp_size),
                                 start=start)
    hf, tensors, write_tokenizer = _read_model(model_dir)
    config = model_config_from_hf(hf, dtype, tp_size)
    calib = prequantized = None
    if quant is not None and (quant.scheme or quant.kv_cache):
        from .quantization.options import quant_config, resolve_calibrator

        calibrator = resolve_calibrator(quant, config) if quant.needs_calibration else None
        config.quantization = quant_config(quant, config, calibrator)
        config.pad_vocab()
        config.validate()
        if calibrator is not None:
            from .quantization.calib_data import read_calibration_text

            text = read_calibration_text(quant.calib_data)
            if calibrator == "modelopt":
                from .quantization.modelopt_calibrate import calibrate_with_modelopt

                prequantized = calibrate_with_modelopt(model_dir, config, text=text, calib_size=quant.calib_size,
                                                       seq_len=quant.calib_seq_len,
                                                       smoothquant_alpha=quant.smoothquant_alpha)
            else:
                from .quantization.calibrate import calibrate

                calib = calibrate(model_dir, config, text=text, calib_size=quant.calib_size,
                                  seq_len=quant.calib_seq_len,
                                  keep_awq_rows=config.quantization.quant_algo == "W4A16_AWQ",
                                  kv_cache=config.quantization.kv_cache_quant_algo is not None)
    _check_output_dir(output_dir, model_dir)
    logger.info("converting %s (%s) to %s, tp_size %d, %s", model_dir, config.hf_architecture,
                output_dir, tp_size, config.dtype)

    return _write_checkpoint(output_dir, model_dir, config,
                             lambda: convert_weights(config, tensors, calib, prequantized), write_tokenizer, start=start)


def _write_checkpoint(output_dir: Path, model_dir: Path, config: ModelConfig,
                      make_ranks: Callable[[], list[dict[str, np.ndarray]]], write_tokenizer: Callable[[Path], list[str]],
                      *, start: float) -> ModelConfig:
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would become the checkpoint dir's mode.
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        ranks = make_ranks()
        for rank, weights in enumerate(ranks):
            write_safetensors(tmp / f"rank{rank}.safetensors", weights)
            logger.info("wrote rank%d.safetensors (%.1f MB)", rank,
                        sum(w.nbytes for w in weights.values()) / 1e6)
        config.save(tmp / "config.json")
        files = write_tokenizer(tmp)
        logger.info("tokenizer files: %s", ", ".join(files) or "none")
        _replace_dir(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already on success (renamed)
    logger.info("done in %.1f s", time.monotonic() - start)
    return config


def load_checkpoint(ckpt_dir: Path | str, rank: int = 0) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """(config, weights of one rank) of a checkpoint dir; arrays are read-only memory maps.

    Checked against `checkpoint_tensors` (names, shapes, dtypes), and every quantization scale
    must be finite and > 0; raises ConfigError naming the problem.
    """
    ckpt_dir = Path(ckpt_dir)
    config = ModelConfig.load(ckpt_dir / "config.json")
    if not 0 <= rank < config.tp_size:
        raise ConfigError(f"rank {rank} is out of range for tp_size {config.tp_size}")
    path = ckpt_dir / f"rank{rank}.safetensors"
    if not path.is_file():
        raise ConfigError(f"checkpoint weights not found: {path}")
    try:
        weights = read_safetensors(path)
    except SafetensorsError as e:
        raise ConfigError(str(e)) from None
    expected = checkpoint_tensors(config)
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ConfigError(f"{path}: tensors missing {missing[:5]}, unexpected {extra[:5]}")
    for name, (shape, dtype) in expected.items():
        w = weights[name]
        if w.shape != shape or w.dtype.name != dtype:
            raise ConfigError(f"{path}: tensor {name!r} is {w.shape} {w.dtype}; expected {shape} {dtype}")
        if name.endswith(("_scale", ".kv_scale")):
            values = np.asarray(w, np.float32)
            if not (np.all(np.isfinite(values)) and np.all(values > 0)):
                bad = values[~(np.isfinite(values) & (values > 0))]
                raise ConfigError(f"{path}: quantization scale {name!r} has {bad.size} value(s) that are not finite "
                                  f"and > 0 (e.g. {bad.flat[0]}); re-run the quantization")
    return config, weights
