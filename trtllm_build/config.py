"""The checkpoint's model config: one dataclass for every supported family.

Family differences are fields (bias, q/k norm, rope variant, norm kind, tied
embeddings), never separate classes. `ModelConfig` is what `config.json` of a
checkpoint dir holds, and what the DSL model reads.

Canonical weight names in `rank{N}.safetensors` (Linear weights are [out, in]):

    embed.weight                      [vocab, hidden]         replicated
    pos_embed.weight                  [max_pos, hidden]       learned positions (gpt2)
    layers.{i}.attn_norm.weight|bias  [hidden]
    layers.{i}.attn.{q,k,v}.weight    [heads/tp * head_dim, hidden]   column-parallel
    layers.{i}.attn.{q,k,v}.bias      [heads/tp * head_dim]           qkv_bias
    layers.{i}.attn.{q,k}_norm.weight [head_dim]              qk_norm (Qwen3)
    layers.{i}.attn.o.weight          [hidden, heads/tp * head_dim]   row-parallel
    layers.{i}.attn.o.bias            [hidden]                added once, after the all-reduce
    layers.{i}.mlp_norm.weight|bias   [hidden]
    layers.{i}.mlp.{gate,up}.weight   [inter/tp, hidden]      gated MLP, column-parallel
    layers.{i}.mlp.down.weight        [hidden, inter/tp]      row-parallel
    layers.{i}.mlp.fc.weight|bias     [inter/tp, hidden]      plain MLP (gpt2)
    layers.{i}.mlp.proj.weight|bias   [hidden, inter/tp]      plain MLP (gpt2)
    final_norm.weight|bias            [hidden]
    lm_head.weight                    [vocab_padded/tp, hidden]   absent when tied and tp_size == 1
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")
ARCHITECTURES = ("llama", "gpt2")


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names it."""


@dataclass
class RopeConfig:
    theta: float = 10000.0
    # None | "linear" | "llama3"; the parameters below apply to the named type.
    scaling_type: str | None = None
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class Mapping:
    world_size: int = 1
    tp_size: int = 1
    pp_size: int = 1


@dataclass
class QuantConfig:
    """How the checkpoint's linear layers and KV cache are quantized (trtllm_build.quantization.schemes
    lists the tensors each quant_algo stores). The embeddings are never quantized; lm_head only with
    quantize_lm_head (its vocabulary rows are then padded to a multiple of 64 per rank)."""
    quant_algo: str | None = None            # FP8 | W8A8_SQ_PER_CHANNEL | W8A16 | W4A16 | W4A16_AWQ
    kv_cache_quant_algo: str | None = None   # FP8
    group_size: int | None = None            # W4A16_AWQ: inputs per weight scale
    smoothquant_alpha: float | None = None   # W8A8_SQ_PER_CHANNEL, for the record
    source: str | None = None                # how the scales were made (calibration, modelopt import)
    quantize_lm_head: bool = False           # lm_head quantized like the other linears (`lm_head.*` tensors)


@dataclass
class ModelConfig:
    architecture: str                  # "llama" (Llama/Mistral/Qwen2/Qwen3) or "gpt2"
    hf_architecture: str               # e.g. "LlamaForCausalLM", kept for the record
    dtype: str                         # weights and activations: float32 | float16 | bfloat16
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    norm_type: str = "rms_norm"        # "rms_norm" | "layer_norm"
    norm_eps: float = 1e-6
    hidden_act: str = "silu"           # "silu" (gated MLP) | "gelu_tanh" (plain MLP)
    gated_mlp: bool = True
    position_embedding: str = "rope"   # "rope" | "learned"
    rope: RopeConfig = field(default_factory=RopeConfig)
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    vocab_size_padded: int = 0         # lm_head rows: the vocab rounded up (vocab_rows_multiple)
    bos_token_id: int | None = None
    eos_token_id: list[int] = field(default_factory=list)
    mapping: Mapping = field(default_factory=Mapping)
    quantization: QuantConfig = field(default_factory=QuantConfig)
    format_version: int = CHECKPOINT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.vocab_size_padded:
            self.pad_vocab()
        self.validate()

    def vocab_rows_multiple(self) -> int:
        """lm_head's rows are a multiple of this: tp_size, times 64 for a quantized lm_head (the
        quantized GEMMs want n a multiple of 16 per rank; 64 is what ModelOpt's export pads to)."""
        return self.mapping.tp_size * (64 if self.quantization.quantize_lm_head else 1)

    def pad_vocab(self) -> None:
        multiple = self.vocab_rows_multiple()
        self.vocab_size_padded = -(-self.vocab_size // multiple) * multiple

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture {self.architecture!r} is not supported; expected one of {ARCHITECTURES}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not supported; expected one of {DTYPES}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                              f"num_key_value_heads ({self.num_key_value_heads})")
        self._validate_quantization()
        tp = self.mapping.tp_size
        if tp < 1:
            raise ConfigError(f"tp_size must be >= 1, got {tp}")
        for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
            if getattr(self, name) % tp:
                raise ConfigError(f"tp_size {tp} does not divide {name} ({getattr(self, name)})")
        if self.vocab_size_padded < self.vocab_size or self.vocab_size_padded % self.vocab_rows_multiple():
            raise ConfigError(f"vocab_size_padded {self.vocab_size_padded} must be at least vocab_size "
                              f"{self.vocab_size} and a multiple of {self.vocab_rows_multiple()}")

    def linear_input_sizes(self) -> dict[str, int]:
        """Per-rank input features of each quantizable linear (by its leaf name)."""
        tp, q = self.mapping.tp_size, self.num_attention_heads * self.head_dim
        sizes = {"q": self.hidden_size, "k": self.hidden_size, "v": self.hidden_size, "o": q // tp}
        mlp = ("gate", "up") if self.gated_mlp else ("fc",)
        sizes.update({name: self.hidden_size for name in mlp})
        sizes["down" if self.gated_mlp else "proj"] = self.intermediate_size // tp
        if self.quantization.quantize_lm_head:
            sizes["lm_head"] = self.hidden_size
        return sizes

    def _validate_quantization(self) -> None:
        from .quantization.schemes import KV_CACHE_ALGOS, SCHEMES

        qc = self.quantization
        if qc.kv_cache_quant_algo is not None and qc.kv_cache_quant_algo not in KV_CACHE_ALGOS:
            raise ConfigError(f"kv_cache_quant_algo {qc.kv_cache_quant_algo!r} is not supported; expected one of "
                              f"{KV_CACHE_ALGOS}")
        if qc.quant_algo is None:
            if qc.quantize_lm_head:
                raise ConfigError("quantize_lm_head needs a quant_algo")
            return
        scheme = SCHEMES.get(qc.quant_algo)
        if scheme is None:
            raise ConfigError(f"quant_algo {qc.quant_algo!r} is not supported; expected one of {tuple(SCHEMES)}")
        if scheme.grouped and not (qc.group_size and qc.group_size > 0):
            raise ConfigError(f"quant_algo {qc.quant_algo} needs a positive group_size, got {qc.group_size}")
        for name, k in self.linear_input_sizes().items():
            if scheme.weight_bits == 4 and k % 2:
                raise ConfigError(f"int4 weights pack two inputs per byte: {name} has {k} inputs per rank")
            if scheme.grouped and k % qc.group_size:
                raise ConfigError(f"group_size {qc.group_size} does not divide the {k} inputs of {name} "
                                  f"(per rank, tp_size {self.mapping.tp_size})")

    @property
    def tp_size(self) -> int:
        return self.mapping.tp_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        version = d.get("format_version", CHECKPOINT_FORMAT_VERSION)
        if version != CHECKPOINT_FORMAT_VERSION:
            raise ConfigError(f"checkpoint format_version {version} is not supported; this build reads "
                              f"{CHECKPOINT_FORMAT_VERSION}")
        d["rope"] = RopeConfig(**d.get("rope", {}))
        d["mapping"] = Mapping(**d.get("mapping", {}))
        d["quantization"] = QuantConfig(**d.get("quantization", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown checkpoint config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"checkpoint config not found: {path}") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"checkpoint config {path} is invalid: {e}") from None
