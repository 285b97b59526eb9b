"""Quantization numerics in numpy: the same roundings and saturations as the GPU kernels
(plugins/quantization/quantize.h says which PTX conversions) and the weight quantizers.

FP8 E4M3: round to nearest even, saturate to +-448 (ml_dtypes rounds to nearest even but turns
overflow into NaN, so values are clipped first). INT8 / INT4: round half to even (np.rint),
saturate to [-128, 127] / [-8, 7]; weights quantized from their own amax land in [-127, 127] /
[-7, 7] up to the rounding at the edge.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = 448.0
INT8_MAX = 127.0
INT4_MAX = 7.0


def to_fp8(x: np.ndarray) -> np.ndarray:
    """float32 -> float8_e4m3fn, nearest even, saturating (NaN stays NaN)."""
    x = np.asarray(x, np.float32)
    return np.clip(x, -FP8_MAX, FP8_MAX).astype(FP8)


def to_int(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 -> int8 values of a `bits`-bit signed integer: nearest even, saturating, NaN -> 0."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    r = np.rint(np.asarray(x, np.float32))
    np.clip(r, lo, hi, out=r)  # +-inf saturate; NaN stays NaN until the next line (in place: a
    np.copyto(r, 0.0, where=np.isnan(r))  # third of an 8B conversion went to nan_to_num's copies)
    return r.astype(np.int8)


def quantize_activation(x: np.ndarray, scale: np.ndarray, dtype: str) -> np.ndarray:
    """What a quantizing op stores: convert(x * (1 / scale)), the reciprocal taken once in float32.
    `scale` is [1] or one per column of x's last dim."""
    inv = (np.float32(1.0) / np.asarray(scale, np.float32)).astype(np.float32)
    scaled = (np.asarray(x, np.float32) * inv).astype(np.float32)
    return to_fp8(scaled) if dtype == "float8_e4m3fn" else to_int(scaled, 8)


def _scale_from_amax(amax: np.ndarray, bound: float) -> np.ndarray:
    # An all-zero row or group gets scale 1 (its values are all 0 either way): a zero scale would
    # make the dequantization meaningless and the builder rejects it.
    amax = np.asarray(amax, np.float32)
    return np.where(amax > 0, amax / np.float32(bound), np.float32(1.0)).astype(np.float32)


def quantize_fp8_per_tensor(w: np.ndarray, amax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fp8 weight, float32 [1] scale) with scale = amax / 448 and q = fp8(w / scale), as ModelOpt."""
    w = np.asarray(w, np.float32)
    scale = _scale_from_amax(np.max(np.abs(w)) if amax is None else amax, FP8_MAX).reshape(1)
    return to_fp8(w / scale[0]), scale


def quantize_int8_per_channel(w: np.ndarray, amax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 [N] scale): one scale per output row, amax / 127 (amax [N]: max |row|
    unless given, e.g. by a calibrator)."""
    w = np.asarray(w, np.float32)
    scale = _scale_from_amax(np.max(np.abs(w), axis=1) if amax is None else np.reshape(amax, -1), INT8_MAX)
    return to_int(w / scale[:, None], 8), scale


def quantize_groupwise(w: np.ndarray, bits: int, group_size: int, scale_dtype: np.dtype,
                       amax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, scale [N, K / group_size] in scale_dtype) for weight-only GEMMs.

    The scale (amax / bound; amax [N, K / group_size]: max |group| unless given) is rounded to the
    activation dtype first (that is what the kernel multiplies by), and the weights are quantized
    against the rounded scale.
    """
    w = np.asarray(w, np.float32)
    n, k = w.shape
    groups = w.reshape(n, k // group_size, group_size)
    bound = INT4_MAX if bits == 4 else INT8_MAX
    if amax is None:
        amax = np.max(np.abs(groups), axis=2)
    scale = _scale_from_amax(np.reshape(amax, (n, k // group_size)), bound).astype(scale_dtype)
    q = to_int(groups / scale.astype(np.float32)[:, :, None], bits)
    return q.reshape(n, k), scale


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int8 values in [-8, 7], [N, K] -> uint8 [N, K / 2]; even k in the low nibble."""
    u = (np.asarray(q, np.int8).astype(np.uint8) & 0x0F)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """uint8 [N, K / 2] -> int8 [N, K] in [-8, 7]."""
    p = np.asarray(packed, np.uint8)
    lo, hi = (p & 0x0F).astype(np.int8), (p >> 4).astype(np.int8)
    out = np.empty((p.shape[0], p.shape[1] * 2), np.int8)
    out[:, 0::2], out[:, 1::2] = lo, hi
    return np.where(out >= 8, out - 16, out).astype(np.int8)


def dequantize_weight_only(weight: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """The weight a W8A16 / W4A16 GEMM multiplies by: round_to_dtype(float32(q) * scale), float32."""
    q = unpack_int4(weight) if bits == 4 else np.asarray(weight, np.int8)
    n, k = q.shape
    groups = scale.shape[1]
    w = q.astype(np.float32).reshape(n, groups, k // groups) * scale.astype(np.float32)[:, :, None]
    return w.astype(scale.dtype).astype(np.float32).reshape(n, k)
