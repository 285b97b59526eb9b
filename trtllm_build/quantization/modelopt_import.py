"""Import of checkpoints quantized by NVIDIA ModelOpt, with their scales as they are.

- HF export (`export_hf_checkpoint`): HF config.json + hf_quant_config.json
  {"quantization": {"quant_algo", "kv_cache_quant_algo", "group_size", ...}} and HF-named tensors
  with `weight` (fp8, int8, or int4 packed two per byte along the *output* dim: byte [n // 2, k]
  holds rows 2m (low nibble) and 2m + 1), `weight_scale`, `input_scale`, `pre_quant_scale`, and
  `self_attn.{k,v}_proj.{k,v}_scale` (amax / 448) for an FP8 KV cache. quant_algo FP8,
  W8A8_SQ_PER_CHANNEL, W4A16_AWQ, W8A16.
- TensorRT-LLM export (`export_tensorrt_llm_checkpoint`): config.json with `architecture` and
  `quantization.quant_algo`, rank{N}.safetensors with TensorRT-LLM names and q/k/v fused as
  `attention.qkv` (rows concatenated), the same tensors under other names:
  `weights_scaling_factor` (FP8 [1], SQ [N], AWQ [N, K/G]), `activation_scaling_factor` ([1]; none
  for AWQ), `prequant_scaling_factor` ([K], every SQ / AWQ layer; layernorms left as they are),
  `kv_cache_scaling_factor`; int4 packed as in the HF export. quant_algo FP8,
  W8A8_SQ_PER_CHANNEL, W4A16_AWQ. Embedding and lm_head rows past vocab_size (ModelOpt pads them
  to a multiple of 64) are dropped.

A quantized lm_head (ModelOpt's presets exclude lm_head, so an export has one only when asked
for) stays quantized, as `--quantize-lm-head` makes it, padded to our vocab rows.

Layers that our builder fuses (q/k/v, gate/up) must share the scales that depend on their
common input; FP8 per-tensor weight scales that differ are unified by requantizing to the
largest (what ModelOpt's own export does), other mismatches are refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, QuantConfig
from ..convert_error import ConvertError
from . import numerics
from .schemes import scheme_of

log = logging.getLogger(__name__)

HF_ALGOS = ("FP8", "W8A8_SQ_PER_CHANNEL", "W4A16_AWQ", "W8A16")
TRTLLM_ALGOS = ("FP8", "W8A8_SQ_PER_CHANNEL", "W4A16_AWQ")


def detect(model_dir: Path) -> str | None:
    """"modelopt_hf", "modelopt_trtllm" or None (not a ModelOpt export)."""
    if not model_dir.is_dir():
        return None
    if (model_dir / "hf_quant_config.json").is_file():
        return "modelopt_hf"
    config = model_dir / "config.json"
    if config.is_file() and (model_dir / "rank0.safetensors").is_file():
        try:
            d = json.loads(config.read_text())
        except json.JSONDecodeError:
            return None
        if "architecture" in d and isinstance(d.get("quantization"), dict) and "format_version" not in d:
            return "modelopt_trtllm"
    return None


def _unify_fp8(weights: list[np.ndarray], scales: list[float]) -> tuple[list[np.ndarray], np.ndarray]:
    top = max(scales)
    out = [w if s == top else numerics.to_fp8(w.astype(np.float32) * np.float32(s / top)) for w, s in zip(weights, scales)]
    if any(s != top for s in scales):
        log.info("requantized fused FP8 weights to a shared scale %g", top)
    return out, np.array([top], np.float32)


def _same(values: list[np.ndarray], what: str, names: list[str]) -> np.ndarray:
    if any(not np.array_equal(v, values[0]) for v in values[1:]):
        raise ConvertError(f"{what} differs between {', '.join(names)}, which read one input; re-export with "
                           f"ModelOpt's fused-layer handling")
    return values[0]


def unpack_modelopt_int4(packed: np.ndarray) -> np.ndarray:
    """ModelOpt's uint8 [N / 2, K] (pairs of output rows) -> int8 [N, K] in [-8, 7]."""
    p = np.asarray(packed).view(np.uint8)
    q = np.empty((p.shape[0] * 2, p.shape[1]), np.int8)
    q[0::2], q[1::2] = (p & 0x0F).astype(np.int8), (p >> 4).astype(np.int8)
    return np.where(q >= 8, q - 16, q).astype(np.int8)


class _Export:
    """Quantized linear groups and KV scales of an export, in our canonical names and formats.
    `read_names`: the export tensors `get` has read (the converter counts them as used)."""

    def __init__(self, get: Callable[[str], np.ndarray], has: Callable[[str], bool], config: ModelConfig,
                 linear_name: Callable[[str], str], kv_names: Callable[[int], list[str]],
                 read_names: set[str]) -> None:
        self.get, self.has, self.config, self.read_names = get, has, config, read_names
        self.linear_name, self.kv_names = linear_name, kv_names
        self.scheme = scheme_of(config.quantization.quant_algo)
        self.dtype = _np_dtype(config.dtype)

    def group(self, names: list[str]) -> dict[str, np.ndarray]:
        src = [self.linear_name(n) for n in names]
        tensor = lambda i, suffix: self.get(f"{src[i]}.{suffix}")  # noqa: E731
        algo, out = self.scheme.quant_algo, {}
        if algo == "FP8":
            ws = [np.asarray(tensor(i, "weight")).view(numerics.FP8) for i in range(len(names))]
            ws, w_scale = _unify_fp8(ws, [float(np.asarray(tensor(i, "weight_scale"), np.float32).max())
                                          for i in range(len(names))])
            x_scale = np.array([max(float(np.asarray(tensor(i, "input_scale"), np.float32).max())
                                    for i in range(len(names)))], np.float32)
            for name, w in zip(names, ws):
                out |= {f"{name}.weight": w, f"{name}.weight_scale": w_scale, f"{name}.input_scale": x_scale}
            return self._pad_lm_head(out) if names == ["lm_head"] else out
        pre = None
        if self.scheme.pre_quant_scale:
            # An export without the tensors (AWQ's "pre_quant_scale": false) scales by 1.
            pres = [np.asarray(tensor(i, "pre_quant_scale")) if self.has(f"{src[i]}.pre_quant_scale")
                    else np.ones(np.asarray(tensor(i, "weight")).shape[1], np.float32) for i in range(len(names))]
            pre = _same(pres, "pre_quant_scale", src).astype(np.float32).astype(self.dtype)
        if algo == "W8A8_SQ_PER_CHANNEL":
            x_scale = _same([np.asarray(tensor(i, "input_scale"), np.float32).reshape(1) for i in range(len(names))],
                            "input_scale", src)
        for i, name in enumerate(names):
            w = np.asarray(tensor(i, "weight"))
            scale = np.asarray(tensor(i, "weight_scale"), np.float32)
            if algo == "W8A8_SQ_PER_CHANNEL":
                out |= {f"{name}.weight": w.astype(np.int8), f"{name}.weight_scale": scale.reshape(-1),
                        f"{name}.input_scale": x_scale}
            elif algo == "W8A16":
                out |= {f"{name}.weight": w.astype(np.int8), f"{name}.weight_scale": scale.reshape(-1, 1).astype(self.dtype)}
            else:  # W4A16_AWQ
                q = unpack_modelopt_int4(w)
                out |= {f"{name}.weight": numerics.pack_int4(q),
                        f"{name}.weight_scale": scale.reshape(q.shape[0], -1).astype(self.dtype)}
            if pre is not None:
                out[f"{name}.pre_quant_scale"] = pre
        return self._pad_lm_head(out) if names == ["lm_head"] else out

    def _pad_lm_head(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A quantized lm_head's rows as our checkpoint pads them: the export's own padding dropped
        (its TensorRT-LLM export pads to 64), then zero rows with scale 1 up to vocab_size_padded."""
        vocab, rows = self.config.vocab_size, self.config.vocab_size_padded
        per_row = ("weight", "weight_scale") if self.scheme.per_channel or self.scheme.grouped else ("weight",)
        for role in per_row:
            t = np.asarray(out[f"lm_head.{role}"])[:vocab]
            fill = (np.zeros if role == "weight" else np.ones)((rows - vocab,) + t.shape[1:], t.dtype)
            out[f"lm_head.{role}"] = np.concatenate([t, fill])
        return out

    def kv_scale(self, layer: int) -> np.ndarray:
        values = [float(np.asarray(self.get(n), np.float32).max()) for n in self.kv_names(layer) if self.has(n)]
        if not values:
            raise ConvertError(f"the export has no KV cache scale for layer {layer} ({self.kv_names(layer)})")
        return np.array([max(values)], np.float32)


def _np_dtype(name: str) -> np.dtype:
    from ..convert import NP_DTYPES

    return NP_DTYPES[name]


def _keep_lm_head_quantized(config: ModelConfig) -> None:
    """An export whose lm_head is quantized (ModelOpt's presets exclude it, so someone asked for it)
    is read as is: lm_head stays quantized, its rows padded as `--quantize-lm-head` pads them."""
    config.quantization = dataclasses.replace(config.quantization, quantize_lm_head=True)
    config.pad_vocab()
    config.validate()
    log.info("lm_head is quantized (%s) in the export: kept quantized", config.quantization.quant_algo)


def _quant_config(q: dict[str, Any], allowed: tuple[str, ...], where: Path, source: str) -> QuantConfig:
    algo, kv = q.get("quant_algo"), q.get("kv_cache_quant_algo")
    if algo not in allowed:
        raise ConvertError(f"{where}: quant_algo {algo!r} is not supported for import; supported: {', '.join(allowed)}")
    if kv not in (None, "FP8"):
        raise ConvertError(f"{where}: kv_cache_quant_algo {kv!r} is not supported; supported: FP8")
    excluded = [m for m in q.get("exclude_modules") or [] if "lm_head" not in m]
    if excluded:
        raise ConvertError(f"{where}: modules left unquantized besides lm_head are not supported: {excluded[:4]}")
    return QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv, group_size=q.get("group_size") if algo == "W4A16_AWQ"
                       else None, source=source)


def read(model_dir: Path, export: str, dtype: str | None, tp_size: int
         ) -> tuple[ModelConfig, Callable[[], list[dict[str, np.ndarray]]], Callable[[Path], list[str]]]:
    """(config, function making the rank tensors, function writing the tokenizer) of an export."""
    from ..convert import NAME_TABLES, convert_weights, model_config_from_hf
    from ..hf_reader import copy_tokenizer_files, read_hf_config, read_hf_weights

    if export == "modelopt_trtllm":
        return _read_trtllm(model_dir, dtype, tp_size)
    hf = read_hf_config(model_dir)
    q = json.loads((model_dir / "hf_quant_config.json").read_text()).get("quantization", {})
    config = model_config_from_hf(hf, dtype, tp_size)
    config.quantization = _quant_config(q, HF_ALGOS, model_dir / "hf_quant_config.json", "modelopt hf export")
    config.validate()
    tensors = read_hf_weights(model_dir)
    table = NAME_TABLES[config.architecture]

    def linear_name(name: str) -> str:
        if name == "lm_head":
            return name
        _, i, leaf = name.split(".", 2)
        return table[f"layers.{{i}}.{leaf}.weight"].name.format(i=i).removesuffix(".weight")

    def kv_names(i: int) -> list[str]:
        base = f"model.layers.{i}.self_attn"
        return [f"{base}.k_proj.k_scale", f"{base}.v_proj.v_scale", f"{base}.k_scale", f"{base}.v_scale"]

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise ConvertError(f"{model_dir}: tensor {name!r} is missing from the ModelOpt export")
        used.add(name)
        return tensors[name]()

    used: set[str] = set()
    if "lm_head.weight_scale" in tensors:
        _keep_lm_head_quantized(config)
    source = _Export(get, lambda n: n in tensors, config, linear_name, kv_names, used)
    log.info("reading ModelOpt HF export %s (%s)", model_dir, config.quantization.quant_algo)
    return config, lambda: convert_weights(config, tensors, prequantized=source), \
        lambda out: copy_tokenizer_files(model_dir, out)


# TensorRT-LLM checkpoint names (Llama family) -> ours.
_TRTLLM_NAMES = {"embed.weight": "transformer.vocab_embedding.weight", "final_norm.weight": "transformer.ln_f.weight",
                 "lm_head.weight": "lm_head.weight",
                 "layers.{i}.attn_norm.weight": "transformer.layers.{i}.input_layernorm.weight",
                 "layers.{i}.mlp_norm.weight": "transformer.layers.{i}.post_layernorm.weight"}
_TRTLLM_LINEARS = {"attn.o": "attention.dense", "mlp.gate": "mlp.fc", "mlp.up": "mlp.gate", "mlp.down": "mlp.proj"}


def _read_trtllm(model_dir: Path, dtype: str | None, tp_size: int):
    from ..convert import convert_weights
    from ..safetensors_io import read_safetensors

    d = json.loads((model_dir / "config.json").read_text())
    if d.get("mapping", {}).get("tp_size", 1) != 1:
        raise ConvertError(f"{model_dir}: TensorRT-LLM exports with tp_size > 1 are not supported; export with tp 1")
    if d.get("architecture") not in ("LlamaForCausalLM", "MistralForCausalLM"):
        raise ConvertError(f"{model_dir}: TensorRT-LLM export of {d.get('architecture')!r} is not supported (Llama)")
    heads, hidden = d["num_attention_heads"], d["hidden_size"]
    rope = {"rope_theta": d.get("rotary_base", 10000.0), "rope_scaling": d.get("rotary_scaling")}
    hf = {"model_type": "llama", "architectures": [d["architecture"]], "vocab_size": d["vocab_size"],
          "hidden_size": hidden, "intermediate_size": d["intermediate_size"],
          "num_hidden_layers": d["num_hidden_layers"], "num_attention_heads": heads,
          "num_key_value_heads": d.get("num_key_value_heads", heads), "head_dim": d.get("head_size"),
          "max_position_embeddings": d["max_position_embeddings"], "rms_norm_eps": d.get("norm_epsilon", 1e-6),
          "tie_word_embeddings": d.get("share_embedding_table", False), "dtype": d.get("dtype"), **rope}
    from ..convert import model_config_from_hf

    config = model_config_from_hf(hf, dtype, tp_size)
    config.quantization = _quant_config(d["quantization"], TRTLLM_ALGOS, model_dir / "config.json",
                                        "modelopt tensorrt-llm export")
    config.validate()
    if d["quantization"].get("has_zero_point"):
        raise ConvertError(f"{model_dir}: int4 weights with zero points are not supported (has_zero_point)")
    raw = read_safetensors(model_dir / "rank0.safetensors")
    q_rows, kv_rows = heads * config.head_dim, config.num_key_value_heads * config.head_dim
    theirs = {"weight_scale": "weights_scaling_factor", "input_scale": "activation_scaling_factor",
              "pre_quant_scale": "prequant_scaling_factor"}

    def resolve(name: str) -> tuple[str, slice | None]:
        """Our name -> (the export's tensor, the rows of it that are ours: q, k, v of the fused qkv)."""
        base, _, suffix = name.rpartition(".")
        suffix = theirs.get(suffix, suffix)
        if ".attn.split." not in base:
            return f"{base}.{suffix}", None
        layer, part = base.split(".attn.split.")
        start = {"q": 0, "k": q_rows, "v": q_rows + kv_rows}[part]
        return f"{layer}.attention.qkv.{suffix}", slice(start, start + (q_rows if part == "q" else kv_rows))

    def has(name: str) -> bool:
        return resolve(name)[0] in raw

    def get(name: str) -> np.ndarray:
        src, rows = resolve(name)
        if src not in raw:
            raise ConvertError(f"{model_dir}: tensor {src!r} is missing from the TensorRT-LLM export")
        fused = raw[src]
        per_row = src.endswith((".weight", ".weights_scaling_factor")) and fused.ndim > 0 and fused.shape[0] > 1
        if rows is None or not per_row:  # input-side and per-tensor scales are shared by q, k, v
            return fused
        if fused.shape[0] == q_rows + 2 * kv_rows:  # weights and scales per output row
            return fused[rows]
        if src.endswith(".weight") and fused.shape[0] * 2 == q_rows + 2 * kv_rows:  # int4, pairs of rows a byte
            return fused[rows.start // 2:rows.stop // 2]
        raise ConvertError(f"{model_dir}: {src} has shape {fused.shape}, which does not split into q, k, v of "
                           f"{q_rows}, {kv_rows}, {kv_rows} rows")

    def linear_name(name: str) -> str:
        if name == "lm_head":
            return name
        _, i, leaf = name.split(".", 2)
        if leaf in ("attn.q", "attn.k", "attn.v"):
            return f"transformer.layers.{i}.attn.split.{leaf[-1]}"
        return f"transformer.layers.{i}.{_TRTLLM_LINEARS[leaf]}"

    def kv_names(i: int) -> list[str]:
        return [f"transformer.layers.{i}.attention.kv_cache_scaling_factor"]

    # Its tensors reach the converter under our loaders' names, which hold no quantized linears.
    source = _Export(get, has, config, linear_name, kv_names, set())
    loaders = {}
    for ours, export_name in _TRTLLM_NAMES.items():
        for i in range(config.num_hidden_layers) if "{i}" in ours else [None]:
            name = export_name.format(i=i)
            if name in raw:  # under our HF-side names, so the converter's tables find them
                hf_name = {"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
                           "lm_head.weight": "lm_head.weight"}.get(ours) or (
                    f"model.layers.{i}.input_layernorm.weight" if "attn_norm" in ours
                    else f"model.layers.{i}.post_attention_layernorm.weight")
                vocab_rows = ours in ("embed.weight", "lm_head.weight")
                loaders[hf_name] = (lambda n=name, v=vocab_rows: raw[n][:config.vocab_size] if v else raw[n])
    if "lm_head.weights_scaling_factor" in raw:
        _keep_lm_head_quantized(config)
    return config, lambda: convert_weights(config, loaders, prequantized=source), lambda out: []
