"""The quantization schemes: what each stores per linear layer, in the checkpoint and the engine.

Names follow TensorRT-LLM's QuantAlgo (what ModelOpt's exports write too). Per quantized linear
`P` (e.g. `layers.3.attn.q`), with N = out features and K = in features of the rank's shard:

    scheme (CLI)         quant_algo            P.weight                  P.weight_scale            P.input_scale  P.pre_quant_scale
    fp8                  FP8                   float8_e4m3fn [N, K]      float32 [1]               float32 [1]    -
    int8_sq              W8A8_SQ_PER_CHANNEL   int8 [N, K]               float32 [N]               float32 [1]    dtype [K]
    int8_wo              W8A16                 int8 [N, K]               dtype [N, 1]              -              -
    int4_wo              W4A16                 uint8 [N, K/2] (packed)   dtype [N, K/G] (G=K)      -              -
    int4_awq             W4A16_AWQ             uint8 [N, K/2] (packed)   dtype [N, K/G]            -              dtype [K]

`dtype` is the model's activation dtype. Scales are dequantization scales (amax / max bound:
448 for FP8, 127 for INT8, 7 for INT4). Packed int4: element k of row n sits in byte k // 2 of
the row, even k in the low nibble, two's complement. `pre_quant_scale` multiplies the layer's
input (SmoothQuant's 1/s, AWQ's activation scale); the weights are stored already divided by it.
The FP8 KV cache adds `layers.{i}.attn.kv_scale` float32 [1] (amax / 448 of k and v).
The embeddings stay in the model dtype, and lm_head unless the checkpoint's `quantize_lm_head`
(`--quantize-lm-head`) says otherwise: then `lm_head` is one more linear of the table, its N the
padded vocabulary (`vocab_size_padded`, a multiple of 64 per rank; the padding rows are zero with
scale 1).
"""

from __future__ import annotations

from dataclasses import dataclass

# CLI name -> quant_algo
CLI_SCHEMES: dict[str, str] = {
    "fp8": "FP8",
    "int8_sq": "W8A8_SQ_PER_CHANNEL",
    "int8_wo": "W8A16",
    "int4_wo": "W4A16",
    "int4_awq": "W4A16_AWQ",
}
KV_CACHE_ALGOS = ("FP8",)


@dataclass(frozen=True)
class Scheme:
    quant_algo: str
    weight_dtype: str            # "float8_e4m3fn" | "int8" | "int4"
    activation_dtype: str | None  # quantized activations (fp8/int8 GEMMs); None: weight-only
    per_channel: bool            # weight scale per output channel (else per tensor)
    grouped: bool                # weight scale per group of `group_size` inputs
    pre_quant_scale: bool
    needs_calibration: bool

    @property
    def weight_only(self) -> bool:
        return self.activation_dtype is None

    @property
    def weight_bits(self) -> int:
        return 4 if self.weight_dtype == "int4" else 8


SCHEMES: dict[str, Scheme] = {
    "FP8": Scheme("FP8", "float8_e4m3fn", "float8_e4m3fn", False, False, False, True),
    "W8A8_SQ_PER_CHANNEL": Scheme("W8A8_SQ_PER_CHANNEL", "int8", "int8", True, False, True, True),
    "W8A16": Scheme("W8A16", "int8", None, True, False, False, False),
    "W4A16": Scheme("W4A16", "int4", None, True, False, False, False),
    "W4A16_AWQ": Scheme("W4A16_AWQ", "int4", None, True, True, True, True),
}


def scheme_of(quant_algo: str) -> Scheme:
    try:
        return SCHEMES[quant_algo]
    except KeyError:
        raise ValueError(f"quant_algo {quant_algo!r} is not supported; supported: {', '.join(SCHEMES)}") from None


def linear_tensors(scheme: Scheme, n: int, k: int, dtype: str, group_size: int | None
                   ) -> dict[str, tuple[tuple[int, ...], str]]:
    """role -> (shape, dtype) of a quantized linear of n outputs and k inputs (bias not included)."""
    groups = k // group_size if scheme.grouped else 1
    weight_shape = (n, k // 2) if scheme.weight_dtype == "int4" else (n, k)
    out = {"weight": (weight_shape, "uint8" if scheme.weight_dtype == "int4" else scheme.weight_dtype)}
    if scheme.weight_only:
        out["weight_scale"] = ((n, groups), dtype)
    else:
        out["weight_scale"] = ((n,) if scheme.per_channel else (1,), "float32")
        out["input_scale"] = ((1,), "float32")
    if scheme.pre_quant_scale:
        out["pre_quant_scale"] = ((k,), dtype)
    return out


def tp_split_axis(role: str, scheme: Scheme, parallel: str) -> int | None:
    """The axis a tensor of a column- or row-parallel linear is split along under TP (None: replicated)."""
    if role in ("weight", "bias"):
        return (0 if parallel == "column" else 1) if role == "weight" else (0 if parallel == "column" else None)
    if role == "weight_scale":
        if parallel == "column":
            return 0 if scheme.per_channel else None
        return 1 if scheme.grouped else None
    if role == "pre_quant_scale":
        return 0 if parallel == "row" else None
    return None  # input_scale, per-tensor scales
