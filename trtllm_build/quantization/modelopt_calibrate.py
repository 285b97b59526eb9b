"""Calibration with NVIDIA ModelOpt (`pip install 'trtllm[modelopt]'`): `mtq.quantize` with its
FP8_DEFAULT_CFG / INT8_SMOOTHQUANT_CFG / INT4_AWQ_CFG (block size = our group size) and FP8_KV_CFG
on the Hugging Face model in torch, then the scales read off its quantizer modules:

    weight_scale      weight_quantizer.amax / maxbound   (per tensor, per output channel, per group)
    input_scale       input_quantizer.amax / maxbound
    pre_quant_scale   input_quantizer.pre_quant_scale    (SmoothQuant, AWQ; module.weight is already divided by it)
    kv_scale          k_bmm_quantizer.amax / maxbound    (= v_bmm_quantizer's, see below)

Before the scales are read, the layers our builder fuses (q/k/v and gate/up: one GEMM with one
quantized input) are made to share what depends on their common input by ModelOpt's own export
step, `preprocess_linear_fusion` (the mean pre_quant_scale with the weights re-smoothed to it, the
largest input amax, one FP8 weight amax), and k and v of a layer share the larger of their two
amaxes (our FP8 KV cache has one scale per layer). The fake-quant model left after that is exactly
what the checkpoint holds: the reference our engines are tested and measured against.

The checkpoint tensors are written by quantize_weights.write_group, as for the built-in calibrator.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, QuantConfig
from ..convert import NP_DTYPES, linear_groups
from ..convert_error import ConvertError
from . import numerics
from .calibrate import calibration_batches, find_module, linear_module, load_hf_model
from .quantize_weights import GroupScales, kv_cache_scale, write_group
from .schemes import scheme_of

log = logging.getLogger(__name__)

# modelopt 0.47 imports requests without declaring it.
_REQUIRED = ("torch", "transformers", "modelopt", "requests")


def modelopt_unavailable(config: ModelConfig | None = None) -> str | None:
    """None when ModelOpt can calibrate here (and the model, if given); otherwise why not, in one line."""
    for name in _REQUIRED:
        if importlib.util.find_spec(name) is None:
            return f"NVIDIA ModelOpt calibration needs {name}, which is not installed (pip install 'trtllm[modelopt]')"
    if config is not None and config.architecture != "llama":  # module names and fusion groups: llama's
        return f"NVIDIA ModelOpt calibration supports the llama family here, not {config.architecture}"
    return None


def mtq_config(qc: QuantConfig, smoothquant_alpha: float = 0.5) -> dict[str, Any]:
    """ModelOpt's quantize config for a QuantConfig: its preset for the scheme (max calibration of
    weights only for the weight-only schemes), plus its FP8 KV cache preset."""
    import modelopt.torch.quantization as mtq

    presets = {"FP8": mtq.FP8_DEFAULT_CFG, "W8A8_SQ_PER_CHANNEL": mtq.INT8_SMOOTHQUANT_CFG,
               "W4A16_AWQ": mtq.INT4_AWQ_CFG, "W8A16": mtq.INT8_WEIGHT_ONLY_CFG, "W4A16": mtq.INT8_WEIGHT_ONLY_CFG}
    if qc.quant_algo is None:  # --kv-cache fp8 alone
        cfg = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    else:
        cfg = copy.deepcopy(presets[qc.quant_algo])
    weight_cfg = next((e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*weight_quantizer"), None)
    if qc.quant_algo == "W4A16":  # INT4 per output channel: the INT8 weight-only preset with 4 bits
        weight_cfg["num_bits"] = 4
    if qc.quant_algo == "W8A8_SQ_PER_CHANNEL":
        cfg["algorithm"] = {"method": "smoothquant", "alpha": smoothquant_alpha}
    if qc.quant_algo == "W4A16_AWQ":
        weight_cfg["block_sizes"] = {**weight_cfg["block_sizes"], -1: qc.group_size}
    if qc.quantize_lm_head:  # the presets exclude lm_head by name; its quantizers then follow the patterns above
        cfg["quant_cfg"] = [e for e in cfg["quant_cfg"] if e.get("quantizer_name") != "*lm_head*"]
    if qc.kv_cache_quant_algo == "FP8":
        cfg["quant_cfg"] = cfg["quant_cfg"] + copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"])
    return cfg


def _attention_module(model, layer: int):
    return find_module(model, f"model.layers.{layer}.self_attn")


def _forward_loop(batches: list[list[int]]):
    """ModelOpt's forward_loop over the calibration batches, logging progress (AWQ runs it more than once)."""
    import torch

    passes = [0]
    every = max(1, len(batches) // 4)

    def loop(model) -> None:
        passes[0] += 1
        start = time.monotonic()
        with torch.no_grad():
            for n, batch in enumerate(batches, 1):
                model(torch.tensor([batch]))
                if n % every == 0 or n == len(batches):
                    log.info("ModelOpt calibration pass %d: %d/%d sequences (%.1f s)", passes[0], n, len(batches),
                             time.monotonic() - start)
    return loop


def quantize_hf_model(model, config: ModelConfig, batches: list[list[int]], smoothquant_alpha: float = 0.5) -> None:
    """mtq.quantize the float HF model in place over `batches`, then make the layers our builder fuses
    share their input's scales (module docstring). The model is left as ModelOpt's fake-quant model of
    exactly what the checkpoint holds."""
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export.quant_utils import preprocess_linear_fusion

    qc = config.quantization
    start = time.monotonic()
    head = model.get_output_embeddings()
    if qc.quantize_lm_head and head.weight is model.get_input_embeddings().weight:
        # Untie: SmoothQuant and AWQ rescale lm_head's weight in place, which must not reach the embeddings.
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
    mtq.quantize(model, mtq_config(qc, smoothquant_alpha), _forward_loop(batches))
    scheme = scheme_of(qc.quant_algo) if qc.quant_algo else None
    with torch.no_grad():
        # Weight-only per-channel scales depend on nothing shared (and ModelOpt's fusion step
        # rejects INT4 without blocks).
        if scheme is not None and (not scheme.weight_only or scheme.pre_quant_scale):
            for group in linear_groups(config):
                if len(group) > 1:
                    preprocess_linear_fusion([linear_module(model, config, name) for name in group])
        if qc.kv_cache_quant_algo is not None:
            for i in range(config.num_hidden_layers):
                attn = _attention_module(model, i)
                shared = torch.maximum(attn.k_bmm_quantizer.amax, attn.v_bmm_quantizer.amax)
                attn.k_bmm_quantizer.amax, attn.v_bmm_quantizer.amax = shared, shared.clone()
    log.info("ModelOpt calibrated (%s%s) on %d sequences x %d tokens in %.1f s", qc.quant_algo or "",
             " + FP8 KV cache" if qc.kv_cache_quant_algo else "", len(batches), len(batches[0]),
             time.monotonic() - start)


def _amax(quantizer, bound: float, what: str) -> np.ndarray:
    """The quantizer's amax, checked to be on the scale our `amax / bound` assumes."""
    if not quantizer.is_enabled or quantizer.amax is None:
        raise ConvertError(f"ModelOpt left {what} uncalibrated")
    if float(quantizer.maxbound) != bound:
        raise ConvertError(f"ModelOpt's {what} has max bound {quantizer.maxbound}; expected {bound}")
    return quantizer.amax.detach().float().numpy()


class ModelOptScales:
    """The quantized linears and KV cache scales of a model quantized by `quantize_hf_model`, in our
    checkpoint's form: the `prequantized` source of convert.convert_weights."""

    read_names: frozenset[str] = frozenset()  # the scales come from the torch model, not the source tensors

    def __init__(self, model, config: ModelConfig) -> None:
        self.model, self.config = model, config
        qc = config.quantization
        self.scheme = scheme_of(qc.quant_algo) if qc.quant_algo else None

    def group(self, names: list[str]) -> dict[str, np.ndarray]:
        scheme = self.scheme
        modules = [linear_module(self.model, self.config, name) for name in names]
        w_bound = {"float8_e4m3fn": numerics.FP8_MAX, "int8": numerics.INT8_MAX}.get(scheme.weight_dtype,
                                                                                   numerics.INT4_MAX)
        scales = GroupScales(weights=[m.weight.detach().float().numpy() for m in modules],
                             weight_amax=[_amax(m.weight_quantizer, w_bound, f"{n} weight_quantizer")
                                          for n, m in zip(names, modules)])
        if not scheme.weight_only:
            x_bound = numerics.FP8_MAX if scheme.activation_dtype == "float8_e4m3fn" else numerics.INT8_MAX
            scales.input_amax = float(_amax(modules[0].input_quantizer, x_bound, f"{names[0]} input_quantizer").max())
        if scheme.pre_quant_scale:
            pre = modules[0].input_quantizer.pre_quant_scale
            k = scales.weights[0].shape[1]
            scales.pre_quant_scale = np.ones(k, np.float32) if pre is None else pre.detach().float().numpy().reshape(k)
        return write_group(scheme, names, scales, dtype=NP_DTYPES[self.config.dtype],
                           group_size=self.config.quantization.group_size)

    def kv_scale(self, layer: int) -> np.ndarray:
        attn = _attention_module(self.model, layer)
        return kv_cache_scale(float(_amax(attn.k_bmm_quantizer, numerics.FP8_MAX, f"layer {layer} k_bmm_quantizer")))


def calibrate_with_modelopt(model_dir: Path, config: ModelConfig, *, text: str, calib_size: int, seq_len: int,
                            smoothquant_alpha: float) -> ModelOptScales:
    """Load the HF model, quantize it with ModelOpt over the calibration text, and return its scales."""
    model, encode = load_hf_model(model_dir)
    quantize_hf_model(model, config, calibration_batches(encode, text, calib_size, seq_len), smoothquant_alpha)
    return ModelOptScales(model, config)
