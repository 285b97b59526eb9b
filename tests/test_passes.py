"""Each pass on a small graph: the pattern is rewritten, and the graph computes the same numbers
(float64 numpy interpreter before vs after)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from graph_reference import run_graph, run_graphs
from trtllm_build.config import Mapping, ModelConfig
from trtllm_build.dsl import functional as F
from trtllm_build.dsl.tensor import Parameter, Tracer
from trtllm_build.graph.ir import NUM_TOKENS
from trtllm_build.graph.opset import GraphError, verify_engine_graph
from trtllm_build.models import CausalLM, trace
from trtllm_build.passes import (fold_attention_inputs, fuse_gate_up, fuse_qkv, fuse_residual_norm,
                                 fuse_all_reduce_norm, insert_tp_collectives, optimize, plan_memory,
                                 remove_dead_nodes)

IDS = np.array([3, 17, 5, 99, 42, 7, 0, 64])


def tiny(**kw) -> ModelConfig:
    base = dict(architecture="llama", hf_architecture="LlamaForCausalLM", dtype="float32", vocab_size=128,
                hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    base.update(kw)
    return ModelConfig(**base)


QWEN3 = dict(qk_norm=True, hf_architecture="Qwen3ForCausalLM")
GPT2 = dict(architecture="gpt2", hf_architecture="GPT2LMHeadModel", norm_type="layer_norm", gated_mlp=False,
            hidden_act="gelu_tanh", position_embedding="learned", qkv_bias=True, attn_out_bias=True,
            mlp_bias=True, tie_word_embeddings=True, norm_eps=1e-5)


def random_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    model = CausalLM(config)
    rng = np.random.default_rng(seed)
    aliases = model.weight_aliases()
    return {name: (rng.standard_normal(p.shape) * 0.3 + (1.0 if "norm" in name else 0.0)).astype(np.float32)
            for name, p in model.named_parameters() if name not in aliases}


def logits(graph) -> np.ndarray:
    return run_graph(graph, IDS)["logits"]


def traced(**kw):
    config = tiny(**kw)
    return trace(config, random_weights(config))


def test_fold_attention_inputs_moves_rope_and_qk_norm_into_attention():
    graph = traced(**QWEN3)
    folded = fold_attention_inputs(graph)
    counts = folded.op_counts()
    assert "rope" not in counts
    assert counts["rms_norm"] == graph.op_counts()["rms_norm"] - 2 * 2  # q and k norm of both layers
    attn = next(n for n in folded.nodes if n.op == "attention")
    assert attn.attrs["rope"]["theta"] == 10000.0
    assert attn.weights == {"q_norm": "layers.0.attn.q_norm.weight", "k_norm": "layers.0.attn.k_norm.weight"}
    np.testing.assert_allclose(logits(folded), logits(graph), rtol=1e-10, atol=1e-10)


def test_fold_attention_inputs_leaves_input_graph_untouched():
    graph = traced(**QWEN3)
    before = [n.to_json() for n in graph.nodes]
    fold_attention_inputs(graph)
    assert [n.to_json() for n in graph.nodes] == before


def test_fuse_qkv_packs_projections_into_one_linear():
    graph = fold_attention_inputs(traced(qkv_bias=True))
    fused = fuse_qkv(graph)
    assert fused.op_counts()["linear"] == graph.op_counts()["linear"] - 2 * 2
    attn = next(n for n in fused.nodes if n.op == "attention")
    qkv = next(n for n in fused.nodes if attn.inputs == n.outputs)
    assert fused.weights[qkv.weights["weight"]].shape == ((4 + 2 * 2) * 16, 64)
    assert fused.weights[qkv.weights["bias"]].shape == ((4 + 2 * 2) * 16,)
    np.testing.assert_allclose(logits(fused), logits(graph), rtol=1e-10, atol=1e-10)


def test_fuse_qkv_skips_projections_of_different_inputs():
    tracer = Tracer()
    x = tracer.input("x", (NUM_TOKENS, 8), "float32")
    params = {}
    for name, shape in (("q", (8, 8)), ("k", (4, 8)), ("v", (4, 8)), ("n", (8,))):
        params[name] = Parameter(shape, "float32")
        params[name].name, params[name].value = name, np.ones(shape, np.float32)
    other = F.rms_norm(x, params["n"], 1e-6)
    out = F.attention(F.linear(x, params["q"]), F.linear(other, params["k"]), F.linear(x, params["v"]),
                      layer_idx=0, num_heads=2, num_kv_heads=1, head_dim=4)
    tracer.mark_output(out, "out")
    fused = fuse_qkv(tracer.graph)
    assert fused.op_counts()["linear"] == 3
    assert fused.meta["passes"]["fuse_qkv"] == 0


def test_fuse_gate_up_replaces_silu_mul_with_one_gemm():
    graph = traced()
    fused = fuse_gate_up(graph)
    counts = fused.op_counts()
    assert "silu" not in counts and "mul" not in counts
    assert counts["silu_mul"] == 2
    assert fused.weights["layers.0.mlp.gate_up.weight"].shape == (2 * 96, 64)
    np.testing.assert_allclose(logits(fused), logits(graph), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", [{}, GPT2], ids=["rms_norm", "layer_norm"])
def test_fuse_residual_norm_keeps_the_sum_for_the_next_residual(family):
    graph = traced(**family)
    fused = fuse_residual_norm(graph)
    norm = "rms_norm" if not family else "layer_norm"
    # every norm but the first layer's input norm reads a residual sum (gpt2: embeddings + positions too)
    expected = 2 * 2 if not family else 2 * 2 + 1
    assert fused.op_counts()[f"add_{norm}"] == expected
    assert "add" not in fused.op_counts()
    np.testing.assert_allclose(logits(fused), logits(graph), rtol=1e-10, atol=1e-10)


def shard_for_tp(weights: dict[str, np.ndarray], config: ModelConfig, tp: int) -> list[dict[str, np.ndarray]]:
    """Split TP=1 weights the way the converter does (independent re-statement for the test)."""
    ranks = []
    for r in range(tp):
        shard = {}
        for name, w in weights.items():
            leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else name
            if leaf in ("q", "k", "v", "gate", "up", "fc") and "norm" not in name:
                shard[name] = np.split(w, tp, axis=0)[r]
            elif leaf in ("o", "down", "proj") and name.endswith("weight"):
                shard[name] = np.split(w, tp, axis=1)[r]
            else:
                shard[name] = w
        padded = np.zeros((config.vocab_size_padded, config.hidden_size), np.float32)
        padded[: config.vocab_size] = weights.get("lm_head.weight", weights["embed.weight"])
        shard["lm_head.weight"] = np.split(padded, tp, axis=0)[r]
        ranks.append(shard)
    return ranks


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_collectives_give_the_tp1_result(tp):
    config = tiny(mlp_bias=True, attn_out_bias=True, num_key_value_heads=4, vocab_size=130)
    weights = random_weights(config)
    reference = logits(optimize(trace(config, weights), max_num_tokens=64, max_output_rows=4))
    tp_config = dataclasses.replace(config, mapping=Mapping(tp, tp), vocab_size_padded=0)
    graphs = [insert_tp_collectives(trace(tp_config, w)) for w in shard_for_tp(weights, tp_config, tp)]
    counts = graphs[0].op_counts()
    assert counts["all_reduce"] == 2 * 2 and counts["all_gather"] == 1
    assert all("bias" not in n.weights for n in graphs[0].nodes if n.attrs.get("parallel") == "row")
    out = run_graphs(graphs, IDS)["logits"]
    np.testing.assert_allclose(out[:, : config.vocab_size], reference, rtol=1e-9, atol=1e-9)
    assert not out[:, config.vocab_size:].any()  # padded vocab rows are zero


@pytest.mark.parametrize("bias", [False, True])
def test_fuse_all_reduce_norm_takes_each_unbiased_all_reduce_into_the_residual_norm_it_feeds(bias):
    config = tiny(mlp_bias=bias, attn_out_bias=bias, num_key_value_heads=4, vocab_size=130)
    weights = random_weights(config)
    reference = logits(optimize(trace(config, weights), max_num_tokens=64, max_output_rows=4))
    tp_config = dataclasses.replace(config, mapping=Mapping(2, 2), vocab_size_padded=0)
    graphs = [fuse_all_reduce_norm(insert_tp_collectives(fuse_residual_norm(trace(tp_config, w))))
              for w in shard_for_tp(weights, tp_config, 2)]
    counts = graphs[0].op_counts()
    fused = 0 if bias else 2 * 2  # a bias is added after the sum, before the residual: those stay apart
    assert counts.get("all_reduce_add_rms_norm", 0) == fused and counts.get("all_reduce", 0) == 2 * 2 - fused
    assert counts.get("add_rms_norm", 0) == 2 * 2 - fused
    out = run_graphs(graphs, IDS)["logits"]
    np.testing.assert_allclose(out[:, : config.vocab_size], reference, rtol=1e-9, atol=1e-9)


def test_insert_tp_collectives_is_a_no_op_at_tp1():
    graph = traced()
    assert insert_tp_collectives(graph).op_counts() == graph.op_counts()


def test_remove_dead_nodes_drops_unused_branch_and_its_weights_but_keeps_attention():
    tracer = Tracer()
    x = tracer.input("x", (NUM_TOKENS, 8), "float32")
    p = {}
    for name, shape in (("a", (8, 8)), ("dead", (8, 8)), ("n", (8,))):
        p[name] = Parameter(shape, "float32")
        p[name].name, p[name].value = name, np.ones(shape, np.float32)
    F.linear(x, p["dead"])
    F.attention(x, x, x, layer_idx=0, num_heads=2, num_kv_heads=2, head_dim=4)  # writes the KV cache
    tracer.mark_output(F.rms_norm(F.linear(x, p["a"]), p["n"], 1e-6), "out")
    cleaned = remove_dead_nodes(tracer.graph)
    assert [n.op for n in cleaned.nodes] == ["attention", "linear", "rms_norm"]
    assert set(cleaned.weights) == {"a", "n"}
    assert cleaned.meta["passes"]["remove_dead_nodes"] == 1


def test_plan_memory_never_overlaps_live_tensors():
    graph = optimize(traced(), max_num_tokens=100, max_output_rows=3)
    plan = graph.meta["memory_plan"]
    order = {name: -1 for name in graph.inputs}
    last = dict(order)
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last[name] = i
        for name in node.outputs:
            order[name] = last[name] = i
    for name in graph.outputs:
        last[name] = len(graph.nodes)
    tensors = plan["tensors"]
    assert set(tensors) == set(order)
    for a in tensors:
        assert tensors[a]["offset"] % plan["alignment"] == 0
        assert tensors[a]["offset"] + tensors[a]["bytes"] <= plan["arena_bytes"]
        for b in tensors:
            if a < b and not (last[a] < order[b] or last[b] < order[a]):
                ta, tb = tensors[a], tensors[b]
                assert ta["offset"] + ta["bytes"] <= tb["offset"] or tb["offset"] + tb["bytes"] <= ta["offset"], (a, b)
    assert tensors["input_ids"]["bytes"] == 100 * 4 // 256 * 256 + 256  # int32 x max_num_tokens, aligned
    assert tensors["logits"]["bytes"] == 3 * 128 * 4 // 256 * 256  # float32 [max_output_rows, vocab]
    assert plan["arena_bytes"] < plan["unplanned_bytes"] / 2


def test_plan_memory_of_a_chain_reuses_two_buffers():
    tracer = Tracer()
    x = tracer.input("x", (NUM_TOKENS, 64), "float32")
    for _ in range(6):
        x = F.silu(x)
    tracer.mark_output(F.gelu_tanh(x), "out")
    plan = plan_memory(tracer.graph, max_num_tokens=16, max_output_rows=1).meta["memory_plan"]
    assert plan["arena_bytes"] == 2 * 16 * 64 * 4
    assert plan["unplanned_bytes"] == 8 * 16 * 64 * 4


@pytest.mark.parametrize("family", [{}, QWEN3, dict(qkv_bias=True), GPT2], ids=["llama", "qwen3", "qwen2", "gpt2"])
def test_full_pipeline_gives_expected_fused_op_counts_and_same_logits(family):
    layers = 3
    graph = traced(num_hidden_layers=layers, **family)
    engine = optimize(graph, max_num_tokens=64, max_output_rows=4)
    counts = engine.op_counts()
    verify_engine_graph(engine)
    assert counts["linear"] == 4 * layers + 1  # qkv, o, gate_up|fc, down|proj per layer + lm_head
    assert counts["attention"] == layers
    assert counts.get("silu_mul", 0) == (0 if family is GPT2 else layers)
    norm = "layer_norm" if family is GPT2 else "rms_norm"
    assert counts[f"add_{norm}"] == 2 * layers + (1 if family is GPT2 else 0)
    assert counts.get(norm, 0) == (0 if family is GPT2 else 1)  # the first layer's input norm
    np.testing.assert_allclose(logits(engine), logits(graph), rtol=1e-9, atol=1e-9)


def test_verify_rejects_trace_only_ops():
    graph = traced()
    with pytest.raises(GraphError, match="'rope' is not in op set"):
        verify_engine_graph(graph)
