"""Quantization passes on small graphs: what each rewrites, and that the graph still computes the
same numbers (float64 reference interpreter, running the quantized math, before vs after)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from graph_reference import run_graph
from test_passes import GPT2, IDS, random_weights, tiny
from trtllm_build.config import QuantConfig
from trtllm_build.convert import linear_groups
from trtllm_build.graph.opset import verify_engine_graph
from trtllm_build.models import trace
from trtllm_build.passes import (fold_attention_inputs, fold_pre_quant_scales, fuse_activation_quant, fuse_gate_up,
                                 fuse_qkv, fuse_residual_norm, insert_tp_collectives, optimize, quantize_linears)
from trtllm_build.quantization.quantize_weights import InputStats, kv_cache_scale, quantize_group
from trtllm_build.quantization.schemes import scheme_of

ALGOS = ["FP8", "W8A8_SQ_PER_CHANNEL", "W8A16", "W4A16", "W4A16_AWQ"]


def quantized(algo: str | None, kv: bool = False, **family):
    """A traced tiny model whose linears are quantized with synthetic calibration statistics."""
    qc = QuantConfig(quant_algo=algo, kv_cache_quant_algo="FP8" if kv else None,
                     group_size=16 if algo == "W4A16_AWQ" else None)
    config = tiny(**family)
    weights = random_weights(config)
    config = dataclasses.replace(config, quantization=qc)
    rng = np.random.default_rng(1)
    if algo:
        for group in linear_groups(config):
            k = weights[f"{group[0]}.weight"].shape[1]
            samples = rng.standard_normal((32, k)).astype(np.float32) * 2
            stats = InputStats(np.abs(samples).max(0) * 2, np.abs(samples).mean(0), samples)
            float_ws = [weights.pop(f"{name}.weight") for name in group]
            weights |= quantize_group(scheme_of(algo), group, float_ws, stats, dtype=np.dtype(np.float32),
                                      group_size=qc.group_size, smoothquant_alpha=0.5)
    if kv:
        weights |= {f"layers.{i}.attn.kv_scale": kv_cache_scale(40.0) for i in range(config.num_hidden_layers)}
    return trace(config, weights)


def fused(graph):
    for p in (fold_attention_inputs, fuse_qkv, fuse_gate_up, fuse_residual_norm, insert_tp_collectives):
        graph = p(graph)
    return graph


def logits(graph):
    return run_graph(graph, IDS)["logits"]


@pytest.mark.parametrize("algo", ALGOS)
def test_quantize_linears_lowers_every_quantized_linear_and_leaves_lm_head(algo):
    graph = quantize_linears(fused(quantized(algo)))
    counts = graph.op_counts()
    op = {"FP8": "fp8_linear", "W8A8_SQ_PER_CHANNEL": "int8_linear"}.get(algo, "weight_only_linear")
    assert counts[op] == 4 * 2 and counts["linear"] == 1  # qkv, o, gate_up, down per layer; lm_head
    lm_head = next(n for n in graph.nodes if n.op == "linear")
    assert graph.weights[lm_head.weights["weight"]].dtype == np.float32
    embed = next(n for n in graph.nodes if n.op == "embedding")
    assert graph.weights[embed.weights["weight"]].dtype == np.float32
    assert counts.get("quantize", 0) == (8 if op != "weight_only_linear" else 0)


@pytest.mark.parametrize("algo,family", [("W8A8_SQ_PER_CHANNEL", {}), ("W4A16_AWQ", {}), ("W4A16_AWQ", {"mlp_bias": True}),
                                         ("W8A8_SQ_PER_CHANNEL", GPT2)], ids=["sq", "awq", "awq_mlp_bias", "sq_layernorm"])
def test_fold_pre_quant_scales_moves_them_into_the_ops_before_qkv_gate_up_and_awq_down(algo, family):
    graph = quantize_linears(fused(quantized(algo, **family)))
    folded = quantize_linears(fold_pre_quant_scales(fused(quantized(algo, **family))))
    weight_only = algo == "W4A16_AWQ"
    # qkv and gate_up|fc of both layers; AWQ's down too (into gate_up's up rows): SmoothQuant's
    # down keeps its scale for the quantize in silu_mul
    assert folded.meta["passes"]["fold_pre_quant_scales"] == (3 if weight_only else 2) * 2
    gemm = "weight_only_linear" if weight_only else "int8_linear"
    before = {n.weights["weight"].rsplit(".", 1)[0]: n for n in graph.nodes if n.op == gemm}
    after = {n.weights["weight"].rsplit(".", 1)[0]: n for n in folded.nodes if n.op == gemm}
    if weight_only:  # o keeps its scale: attention produces its input
        assert "pre_quant_scale" not in after["layers.0.attn.qkv"].weights
        assert "pre_quant_scale" in after["layers.0.attn.o"].weights
        down, gate_up = after["layers.0.mlp.down"], after["layers.0.mlp.gate_up"]
        assert "pre_quant_scale" not in down.weights
        pre = graph.weights[before["layers.0.mlp.down"].weights["pre_quant_scale"]]
        old, new = (g.weights[n.weights["weight_scale"]] for g, n in ((graph, before["layers.0.mlp.gate_up"]),
                                                                      (folded, gate_up)))
        half = old.shape[0] // 2
        np.testing.assert_array_equal(new[:half], old[:half])  # gate rows untouched
        np.testing.assert_allclose(new[half:], old[half:] * pre[:, None], rtol=1e-6)
        if family.get("mlp_bias"):  # u * s = (W_u * s) x + b_u * s: the up half of the bias too
            old_b, new_b = (g.weights[n.weights["bias"]] for g, n in ((graph, before["layers.0.mlp.gate_up"]),
                                                                      (folded, gate_up)))
            np.testing.assert_array_equal(new_b[:half], old_b[:half])
            np.testing.assert_allclose(new_b[half:], old_b[half:] * pre, rtol=1e-6)
            assert not np.allclose(pre, 1.0)  # a scale of ones would prove nothing
    np.testing.assert_allclose(logits(folded), logits(graph), rtol=1e-4, atol=1e-4 * np.abs(logits(graph)).max())


def test_fold_keeps_a_pre_quant_scale_whose_fold_would_turn_float16_scales_subnormal():
    graph = fused(quantized("W4A16_AWQ"))
    linears = {n.weights["weight"].rsplit(".", 1)[0]: n for n in graph.nodes if n.op == "linear"}
    scale_name = linears["layers.0.mlp.gate_up"].weights["weight_scale"]
    graph.weights[scale_name] = graph.weights[scale_name].astype(np.float16)
    pre_name = linears["layers.0.mlp.down"].weights["pre_quant_scale"]
    graph.weights[pre_name] = graph.weights[pre_name] * 1e-4  # scale x s ~1e-5: float16 subnormals
    up_scales = graph.weights[scale_name][graph.weights[scale_name].shape[0] // 2:].astype(np.float32)
    assert (np.abs(up_scales * graph.weights[pre_name][:, None]) < np.finfo(np.float16).tiny).any()
    folded = fold_pre_quant_scales(graph)
    assert folded.meta["passes"]["fold_pre_quant_scales"] == 5  # all but layer 0's down
    after = {n.weights["weight"].rsplit(".", 1)[0]: n for n in folded.nodes if n.op == "linear"}
    assert after["layers.0.mlp.down"].weights["pre_quant_scale"] == pre_name
    assert after["layers.0.mlp.gate_up"].weights["weight_scale"] == scale_name
    assert "pre_quant_scale" not in after["layers.1.mlp.down"].weights
    reference = logits(quantize_linears(graph))
    np.testing.assert_allclose(logits(quantize_linears(folded)), reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("algo", ["FP8", "W8A8_SQ_PER_CHANNEL"])
def test_fuse_activation_quant_moves_quantization_into_norms_and_silu_mul_not_attention(algo):
    graph = quantize_linears(fold_pre_quant_scales(fused(quantized(algo))))
    fused_graph = fuse_activation_quant(graph)
    counts = fused_graph.op_counts()
    assert counts["quantize"] == 2  # the o_proj input of each layer (attention writes it)
    producers = fused_graph.producers()
    for node in fused_graph.nodes:
        if node.op in ("fp8_linear", "int8_linear"):
            producer = producers[node.inputs[0]]
            assert producer.op in ("quantize", "rms_norm", "add_rms_norm", "silu_mul")
            assert fused_graph.values[node.inputs[0]].dtype == ("float8_e4m3fn" if algo == "FP8" else "int8")
            assert "out_scale" in producer.weights
    verify_engine_graph(fused_graph)
    np.testing.assert_array_equal(logits(fused_graph), logits(graph))


@pytest.mark.parametrize("algo", ALGOS)
def test_full_pipeline_of_a_quantized_model_verifies_and_keeps_the_numbers(algo):
    graph = quantized(algo, kv=True)
    engine = optimize(graph, max_num_tokens=64, max_output_rows=4)
    verify_engine_graph(engine)
    reference = quantize_linears(fused(graph))  # unfolded, unfused: the plain quantized math
    np.testing.assert_allclose(logits(engine), logits(reference), rtol=1e-3, atol=1e-3 * np.abs(logits(reference)).max())
    attn = [n for n in engine.nodes if n.op == "attention"]
    assert all("kv_scale" in n.weights for n in attn)
    plan = engine.meta["memory_plan"]["tensors"]
    if algo in ("FP8", "W8A8_SQ_PER_CHANNEL"):  # quantized activations take 1 byte per element
        assert any(t["dtype"] in ("float8_e4m3fn", "int8") for t in plan.values())


def test_fusion_keeps_linears_apart_when_their_shared_scales_differ():
    graph = fold_attention_inputs(quantized("FP8"))
    q = next(n for n in graph.nodes if n.op == "linear" and n.weights["weight"] == "layers.0.attn.q.weight")
    graph.weights[q.weights["input_scale"]] = graph.weights[q.weights["input_scale"]] * 2
    assert fuse_qkv(graph).meta["passes"]["fuse_qkv"] == 1  # layer 1 only
