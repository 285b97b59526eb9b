"""Quantize a checkpoint's linear layers, a group of layers that read the same input at a time.

Layers that read one input (q/k/v; gate/up) share what depends on that input: the activation
scale, SmoothQuant's / AWQ's per-channel scale, and for FP8 the per-tensor weight scale, so the
builder can fuse them into one GEMM whose input is quantized once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import numerics
from .schemes import Scheme

log = logging.getLogger(__name__)

AWQ_ALPHAS = tuple(i / 10 for i in range(11))  # ModelOpt awq_lite's default grid (alpha_step 0.1)


@dataclass
class InputStats:
    """Calibration statistics of one layer input, per channel (over every calibration token)."""
    amax: np.ndarray                  # [K] max |x|
    mean_abs: np.ndarray              # [K] mean |x|
    samples: np.ndarray | None = None  # [S, K] a subsample of rows, for AWQ's search


@dataclass
class CalibStats:
    inputs: dict[str, InputStats] = field(default_factory=dict)        # by the group's first layer, e.g. layers.0.attn.q
    kv_amax: dict[int, float] = field(default_factory=dict)            # layer -> max |k|, |v| as cached
    tokens: int = 0


def _smoothquant(weights: list[np.ndarray], stats: InputStats, alpha: float, dtype: np.dtype
                 ) -> tuple[np.ndarray, list[np.ndarray], float]:
    """SmoothQuant (Xiao et al. 2023): s = amax_x^alpha / amax_w^(1 - alpha) per input channel;
    the input is multiplied by pre_quant_scale = 1 / s (folded into the norm before it when the
    builder can), the weights by s. Returns (pre_quant_scale in dtype, smoothed weights, amax of
    the smoothed input)."""
    w_amax = np.max([np.max(np.abs(w), axis=0) for w in weights], axis=0)
    s = np.power(np.maximum(stats.amax, 1e-5), alpha) / np.power(np.maximum(w_amax, 1e-5), 1 - alpha)
    s = np.clip(s, 1e-4, 1e4)
    pre = (1.0 / s).astype(np.float32).astype(dtype)   # stored in the activation dtype
    pre32 = pre.astype(np.float32)
    return pre, [w / pre32[None, :] for w in weights], float(np.max(stats.amax * pre32))


def _awq_scales(weights: list[np.ndarray], stats: InputStats, group_size: int, dtype: np.dtype) -> np.ndarray:
    """AWQ-lite (Lin et al. 2024; ModelOpt's awq_lite): pick per-channel scales s = mean|x|^a /
    mean|w|^(1-a) over a grid of a (and s = 1) by the output error of the int4 layer on the
    calibration rows; returns pre_quant_scale = 1 / s in dtype."""
    w = np.concatenate(weights, axis=0)
    n, k = w.shape
    x = stats.samples.astype(np.float32)
    reference = x @ w.T
    g = np.abs(w).reshape(n, k // group_size, group_size)
    w_mean = (g / np.maximum(g.max(axis=2, keepdims=True), 1e-12)).reshape(n, k).mean(axis=0)
    candidates = [np.ones(k, np.float32)]
    for a in AWQ_ALPHAS:
        s = np.power(np.maximum(stats.mean_abs, 1e-4), a) / np.power(np.maximum(w_mean, 1e-4), 1 - a)
        candidates.append((s / np.sqrt(s.max() * s.min())).astype(np.float32))
    best, best_err = candidates[0], np.inf
    for s in candidates:
        pre = (1.0 / s).astype(dtype).astype(np.float32)
        q, scale = numerics.quantize_groupwise(w / pre[None, :], 4, group_size, dtype)
        deq = numerics.dequantize_weight_only(numerics.pack_int4(q), scale, 4)
        xs = (x * pre[None, :]).astype(dtype).astype(np.float32)
        err = float(np.mean((xs @ deq.T - reference) ** 2))
        if err < best_err:
            best, best_err = s, err
    return (1.0 / best).astype(np.float32).astype(dtype)


@dataclass
class GroupScales:
    """What a calibrator decided for linears that read one input, in float32: the weights as the
    GEMM multiplies them (already divided by pre_quant_scale) and the amaxes the scales come from
    (scale = amax / max bound). The checkpoint tensors follow from it (`write_group`)."""
    weights: list[np.ndarray]                  # [N, K] per layer
    input_amax: float | None = None            # fp8 / int8_sq: max |x * pre_quant_scale|
    weight_amax: list[np.ndarray] | None = None  # per layer: fp8 [1] (one for the group), int8_sq [N],
    #                                            grouped [N, K / G]; None: max |w| of each row / group
    pre_quant_scale: np.ndarray | None = None  # [K]: SmoothQuant's 1 / s, AWQ's 1 / s


def write_group(scheme: Scheme, names: list[str], scales: GroupScales, *, dtype: np.dtype,
                group_size: int | None) -> dict[str, np.ndarray]:
    """Canonical tensors (`{name}.weight`, `.weight_scale`, ...) of the layers `names` in the form
    schemes.py describes, quantized with the amaxes of `scales`."""
    k = scales.weights[0].shape[1]
    w_amax = scales.weight_amax or [None] * len(names)
    out: dict[str, np.ndarray] = {}
    input_scale = None
    if not scheme.weight_only:
        bound = numerics.FP8_MAX if scheme.activation_dtype == "float8_e4m3fn" else numerics.INT8_MAX
        input_scale = np.array([max(scales.input_amax, 1e-12) / bound], np.float32)
    if scheme.pre_quant_scale:
        pre = scales.pre_quant_scale.astype(np.float32).astype(dtype)  # stored in the activation dtype
    for name, w, amax in zip(names, scales.weights, w_amax):
        if scheme.quant_algo == "FP8":
            if amax is None:  # one scale for the group: the builder fuses its GEMMs
                amax = max(float(np.max(np.abs(v))) for v in scales.weights)
            out[f"{name}.weight"], out[f"{name}.weight_scale"] = numerics.quantize_fp8_per_tensor(
                w, float(np.max(amax)))
        elif scheme.quant_algo == "W8A8_SQ_PER_CHANNEL":
            out[f"{name}.weight"], out[f"{name}.weight_scale"] = numerics.quantize_int8_per_channel(w, amax)
        elif scheme.weight_only:
            bits = scheme.weight_bits
            q, out[f"{name}.weight_scale"] = numerics.quantize_groupwise(
                w, bits, group_size if scheme.grouped else k, dtype, amax)
            out[f"{name}.weight"] = numerics.pack_int4(q) if bits == 4 else q
        else:
            raise ValueError(f"no weight quantizer for {scheme.quant_algo}")
        if input_scale is not None:
            out[f"{name}.input_scale"] = input_scale
        if scheme.pre_quant_scale:
            out[f"{name}.pre_quant_scale"] = pre
    return out


def quantize_group(scheme: Scheme, names: list[str], weights: list[np.ndarray], stats: InputStats | None, *,
                   dtype: np.dtype, group_size: int | None, smoothquant_alpha: float) -> dict[str, np.ndarray]:
    """The built-in calibrator: canonical tensors of the layers `names` that read one input.
    `weights` are the float [N, K] weights, `stats` the calibration statistics of their input."""
    weights = [np.asarray(w, np.float32) for w in weights]
    if scheme.needs_calibration and stats is None:
        raise ValueError(f"{scheme.quant_algo} needs calibration statistics for {names[0]}")
    if scheme.quant_algo == "FP8":
        scales = GroupScales(weights, input_amax=float(np.max(stats.amax)))
    elif scheme.quant_algo == "W8A8_SQ_PER_CHANNEL":
        pre, smoothed, x_amax = _smoothquant(weights, stats, smoothquant_alpha, dtype)
        scales = GroupScales(smoothed, input_amax=x_amax, pre_quant_scale=pre.astype(np.float32))
    elif scheme.pre_quant_scale:  # AWQ
        pre = _awq_scales(weights, stats, group_size, dtype).astype(np.float32)
        scales = GroupScales([w / pre[None, :] for w in weights], pre_quant_scale=pre)
    else:
        scales = GroupScales(weights)
    return write_group(scheme, names, scales, dtype=dtype, group_size=group_size)


def kv_cache_scale(amax: float) -> np.ndarray:
    """FP8 KV cache scale of a layer: amax / 448 (ModelOpt's k_scale / v_scale convention)."""
    return np.array([max(amax, 1e-12) / numerics.FP8_MAX], np.float32)
