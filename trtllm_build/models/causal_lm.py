"""The decoder-only causal LM, written once. Llama, Mistral, Qwen2, Qwen3 and GPT-2 differ only
through ModelConfig fields (norm kind, gated MLP, biases, q/k norm, rope vs learned positions,
tied embeddings)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..config import ModelConfig
from ..dsl import functional as F
from ..dsl.layers import MLP, Attention, ColumnLinear, Embedding, GatedMLP, LayerNorm, LinearQuant, RmsNorm
from ..quantization.schemes import scheme_of
from ..dsl.module import Module
from ..dsl.tensor import Tensor, Tracer
from ..graph.ir import NUM_TOKENS, Graph


def _norm(config: ModelConfig) -> Module:
    cls = RmsNorm if config.norm_type == "rms_norm" else LayerNorm
    return cls(config.hidden_size, config.norm_eps, config.dtype)


def _linear_quant(config: ModelConfig) -> LinearQuant | None:
    qc = config.quantization
    return LinearQuant(scheme_of(qc.quant_algo), qc.group_size) if qc.quant_algo else None


class DecoderLayer(Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        tp = config.tp_size
        quant = _linear_quant(config)
        rope = dataclasses.asdict(config.rope) if config.position_embedding == "rope" else None
        self.attn_norm = _norm(config)
        self.attn = Attention(layer_idx=layer_idx, hidden_size=config.hidden_size,
                              num_heads=config.num_attention_heads // tp,
                              num_kv_heads=config.num_key_value_heads // tp, head_dim=config.head_dim,
                              dtype=config.dtype, qkv_bias=config.qkv_bias, out_bias=config.attn_out_bias,
                              qk_norm_eps=config.norm_eps if config.qk_norm else None, rope=rope, quant=quant,
                              fp8_kv_cache=config.quantization.kv_cache_quant_algo == "FP8")
        self.mlp_norm = _norm(config)
        mlp = GatedMLP if config.gated_mlp else MLP
        self.mlp = mlp(config.hidden_size, config.intermediate_size // tp, config.dtype, bias=config.mlp_bias,
                       quant=quant)

    def __call__(self, hidden: Tensor) -> Tensor:
        hidden = F.add(hidden, self.attn(self.attn_norm(hidden)))
        return F.add(hidden, self.mlp(self.mlp_norm(hidden)))


class CausalLM(Module):
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.embed = Embedding(config.vocab_size, config.hidden_size, config.dtype)
        if config.position_embedding == "learned":
            self.pos_embed = Embedding(config.max_position_embeddings, config.hidden_size, config.dtype)
        self.layers = [DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.final_norm = _norm(config)
        # Logits in float32: sampling and log-probs need the precision; the vocab is gathered across ranks.
        # Quantized only when asked (quantize_lm_head): its error lands on every logit directly.
        self.lm_head = ColumnLinear(config.hidden_size, config.vocab_size_padded // config.tp_size, config.dtype,
                                    gather_output=True, out_dtype="float32",
                                    quant=_linear_quant(config) if config.quantization.quantize_lm_head else None)

    def __call__(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        hidden = self.embed(input_ids)
        if self.config.position_embedding == "learned":
            hidden = F.add(hidden, self.pos_embed(position_ids))
        for layer in self.layers:
            hidden = layer(hidden)
        hidden = F.gather_rows(self.final_norm(hidden))
        return self.lm_head(hidden)

    def weight_aliases(self) -> dict[str, str]:
        """Tied embeddings on one rank: an unquantized lm_head reads the embedding table (no copy in the
        checkpoint)."""
        c = self.config
        if c.tie_word_embeddings and c.tp_size == 1 and not c.quantization.quantize_lm_head:
            return {"lm_head.weight": "embed.weight"}
        return {}


def trace(config: ModelConfig, weights: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Graph:
    """Build the model for one TP rank, bind its checkpoint tensors and record its graph."""
    model = CausalLM(config)
    model.load_weights(weights, model.weight_aliases())
    tracer = Tracer({"tp_size": config.tp_size, **(meta or {})})
    input_ids = tracer.input("input_ids", (NUM_TOKENS,), "int32")
    position_ids = tracer.input("position_ids", (NUM_TOKENS,), "int32")
    logits = model(input_ids, position_ids)
    tracer.mark_output(logits, "logits")
    return tracer.graph
