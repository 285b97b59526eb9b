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


def quantize_group(scheme: Scheme, names: list[str], weights: list[np.ndarray], stats: InputStats | None, *,
                   dtype: np.dtype, group_size: int | None, smoothquant_alpha: float) -> dict[str, np.ndarray]:
    """Canonical tensors (`{name}.weight`, `.weight_scale`, ...) of the layers `names` that read one input.
    `weights` are the float [N, K] weights, `stats` the calibration statistics of their input."""
    weights = [np.asarray(w, np.float32) for w in weights]
    k = weights[0].shape[1]
    out: dict[str, np.ndarray] = {}
    if scheme.needs_calibration and stats is None:
        raise ValueError(f"{scheme.quant_algo} needs calibration statistics for {names[0]}")
    if scheme.quant_algo == "FP8":
        input_scale = np.array([max(float(np.max(stats.amax)), 1e-12) / numerics.FP8_MAX], np.float32)
        w_amax = max(float(np.max(np.abs(w))) for w in weights)
        for name, w in zip(names, weights):
            out[f"{name}.weight"], out[f"{name}.weight_scale"] = numerics.quantize_fp8_per_tensor(w, w_amax)
            out[f"{name}.input_scale"] = input_scale
    elif scheme.quant_algo == "W8A8_SQ_PER_CHANNEL":
        pre, smoothed, x_amax = _smoothquant(weights, stats, smoothquant_alpha, dtype)
        input_scale = np.array([max(x_amax, 1e-12) / numerics.INT8_MAX], np.float32)
        for name, w in zip(names, smoothed):
            out[f"{name}.weight"], out[f"{name}.weight_scale"] = numerics.quantize_int8_per_channel(w)
            out[f"{name}.input_scale"] = input_scale
            out[f"{name}.pre_quant_scale"] = pre
    elif scheme.weight_only:
        bits = scheme.weight_bits
        g = group_size if scheme.grouped else k
        pre = None
        if scheme.pre_quant_scale:
            pre = _awq_scales(weights, stats, g, dtype)
            weights = [w / pre.astype(np.float32)[None, :] for w in weights]
        for name, w in zip(names, weights):
            q, scale = numerics.quantize_groupwise(w, bits, g, dtype)
            out[f"{name}.weight"] = numerics.pack_int4(q) if bits == 4 else q
            out[f"{name}.weight_scale"] = scale
            if pre is not None:
                out[f"{name}.pre_quant_scale"] = pre
    else:
        raise ValueError(f"no weight quantizer for {scheme.quant_algo}")
    return out


def kv_cache_scale(amax: float) -> np.ndarray:
    """FP8 KV cache scale of a layer: amax / 448 (ModelOpt's k_scale / v_scale convention)."""
    return np.array([max(amax, 1e-12) / numerics.FP8_MAX], np.float32)
