"""Calibration: run the Hugging Face model (torch, float32, CPU or GPU) over calibration text and
collect what the quantizers need, with forward hooks on the float model (as ModelOpt's max
calibration and awq_lite do: statistics of the unquantized model):

- per linear-layer input (one per group of layers that read it): max |x| and mean |x| per channel,
  and for AWQ a subsample of rows to search its scales on;
- per attention layer: max |k| and |v| as they enter the KV cache. k is cached after RoPE, which
  rotates dims (i, i + d/2) in pairs, so its max is bounded by the pair norm sqrt(k_i^2 + k_{i+d/2}^2)
  of the k before RoPE; that bound is the amax used (never smaller than the true one).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..convert import NAME_TABLES, linear_groups
from ..convert_error import ConvertError
from .quantize_weights import CalibStats, InputStats

log = logging.getLogger(__name__)

AWQ_SAMPLE_ROWS = 512   # calibration rows kept per layer input for AWQ's scale search


def _import_torch():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ConvertError(f"calibration needs torch and transformers ({e.name} is missing): "
                           f"pip install 'trtllm[quant]'") from None
    return torch, transformers


def load_hf_model(model_dir: Path):
    """(model, encode) from an HF dir or a .gguf file: the float32 model in eval mode and a
    function text -> token ids (no special tokens)."""
    torch, transformers = _import_torch()
    if model_dir.suffix == ".gguf":
        where, extra = str(model_dir.parent), {"gguf_file": model_dir.name}
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **extra)
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    else:
        where, extra = str(model_dir), {}
        if not (model_dir / "tokenizer.json").is_file():
            raise ConvertError(f"calibration needs the model's tokenizer: {model_dir}/tokenizer.json is missing")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    model = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **extra).eval()
    return model, encode


def calibration_batches(encode, text: str, calib_size: int, seq_len: int) -> list[list[int]]:
    ids = encode(text)
    count = min(calib_size, len(ids) // seq_len)
    if count < 1:
        raise ConvertError(f"the calibration text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    if count < calib_size:
        log.warning("the calibration text gives %d sequences of %d tokens, not %d", count, seq_len, calib_size)
    return [ids[i * seq_len:(i + 1) * seq_len] for i in range(count)]


def find_module(model, hf_name: str):
    """The submodule of an HF module or weight name (with or without the model's prefix)."""
    name = hf_name.removesuffix(".weight")
    for candidate in (name, name.removeprefix("model."), name.removeprefix("transformer.")):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    raise ConvertError(f"calibration: the model has no module {name!r}")


def linear_module(model, config: ModelConfig, canonical: str):
    """The HF module of a quantizable linear's canonical name (`layers.3.attn.q`, `lm_head`). lm_head
    is the model's own output projection even where its weight is tied to the embeddings."""
    if canonical == "lm_head":
        return model.get_output_embeddings()
    _, layer, leaf = canonical.split(".", 2)
    return find_module(model, NAME_TABLES[config.architecture][f"layers.{{i}}.{leaf}.weight"].name.format(i=layer))


class _InputRecorder:
    """Running per-channel max |x| and sum |x| of a module's input, plus a row subsample."""

    def __init__(self, keep_rows: int, seed: int) -> None:
        self.amax = self.sum_abs = None
        self.count = 0
        self.keep_rows = keep_rows
        self.rows: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def __call__(self, module, args) -> None:
        x = args[0].detach().float().reshape(-1, args[0].shape[-1])
        a = x.abs()
        amax, total = a.amax(dim=0).numpy().astype(np.float64), a.sum(dim=0).numpy().astype(np.float64)
        self.amax = amax if self.amax is None else np.maximum(self.amax, amax)
        self.sum_abs = total if self.sum_abs is None else self.sum_abs + total
        self.count += x.shape[0]
        if self.keep_rows:
            take = self.rng.choice(x.shape[0], size=min(x.shape[0], max(1, self.keep_rows // 8)), replace=False)
            self.rows.append(x[np.sort(take)].numpy().astype(np.float32))

    def stats(self) -> InputStats:
        samples = None
        if self.rows:
            rows = np.concatenate(self.rows)
            samples = rows[self.rng.choice(len(rows), size=min(len(rows), self.keep_rows), replace=False)]
        return InputStats(amax=self.amax, mean_abs=self.sum_abs / self.count, samples=samples)


def _pair_norm_amax(k, head_dim: int) -> float:
    t = k.detach().float().reshape(-1, head_dim)
    half = head_dim // 2
    return float(((t[:, :half] ** 2 + t[:, half:] ** 2).sqrt()).max())


def calibrate(model_dir: Path, config: ModelConfig, *, text: str, calib_size: int, seq_len: int,
              keep_awq_rows: bool, kv_cache: bool) -> CalibStats:
    """Run calibration and return the statistics convert_weights quantizes with."""
    torch, _ = _import_torch()
    start = time.monotonic()
    model, tokenizer = load_hf_model(model_dir)
    batches = calibration_batches(tokenizer, text, calib_size, seq_len)
    recorders: dict[str, _InputRecorder] = {}
    handles = []
    modules_seen: dict[int, _InputRecorder] = {}
    for n, group in enumerate(linear_groups(config)):
        module = linear_module(model, config, group[0])
        if id(module) in modules_seen:  # GPT-2's c_attn is q, k and v at once
            recorders[group[0]] = modules_seen[id(module)]
            continue
        recorder = _InputRecorder(AWQ_SAMPLE_ROWS if keep_awq_rows else 0, seed=n)
        recorders[group[0]] = modules_seen[id(module)] = recorder
        handles.append(module.register_forward_pre_hook(recorder))

    kv_amax: dict[int, float] = {}

    def kv_hook(layer: int, part: str):
        def hook(module, args, output) -> None:
            hd = config.head_dim
            if part == "qkv":  # GPT-2: fused [q | k | v], no rope
                h = config.num_attention_heads * hd
                value = float(output[..., h:].abs().max())
            elif part == "k" and config.position_embedding == "rope":
                value = _pair_norm_amax(output, hd)
            else:
                value = float(output.abs().max())
            kv_amax[layer] = max(kv_amax.get(layer, 0.0), value)
        return hook

    if kv_cache:
        for i in range(config.num_hidden_layers):
            if config.architecture == "gpt2":
                handles.append(find_module(model, f"transformer.h.{i}.attn.c_attn.weight").register_forward_hook(
                    kv_hook(i, "qkv")))
                continue
            k_name = "self_attn.k_norm" if config.qk_norm else "self_attn.k_proj"
            handles.append(find_module(model, f"model.layers.{i}.{k_name}.weight").register_forward_hook(kv_hook(i, "k")))
            handles.append(find_module(model, f"model.layers.{i}.self_attn.v_proj.weight").register_forward_hook(
                kv_hook(i, "v")))
    try:
        with torch.no_grad():
            for batch in batches:
                model(torch.tensor([batch]))
    finally:
        for h in handles:
            h.remove()
    stats = CalibStats(inputs={name: r.stats() for name, r in recorders.items()}, kv_amax=kv_amax,
                       tokens=len(batches) * seq_len)
    log.info("calibrated on %d sequences x %d tokens in %.1f s", len(batches), seq_len, time.monotonic() - start)
    return stats
