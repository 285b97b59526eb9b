"""Op set v4's fused weight_only_linear (docs/opset.md): the RMSNorm in front of an int4 GEMM and the
SiLU·mul after it, as one op. What opset verification accepts, what the fusion pass matches
(passes/fusion.py), that a CPU engine of the fused graph gives the unfused engine's tokens and logits
bit for bit, and what the engine loader refuses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from graph_reference import run_graph
from test_engine_format import edit_json, rebuild
from test_passes import IDS
from test_quant_passes import quantized
from trtllm_build import passes
from trtllm_build.build import BuildConfig, build
from trtllm_build.convert import convert
from trtllm_build.graph.ir import NUM_TOKENS, Graph, Node, TensorType, dtype_to_numpy
from trtllm_build.graph.opset import GraphError, verify_engine_graph
from trtllm_build.passes import PIPELINE, fold_pre_quant_scales, fuse_norm_and_activation_into_weight_only
from trtllm_build.quantization.numerics import pack_int4
from trtllm_build.quantization.options import QuantOptions

FUSION = fuse_norm_and_activation_into_weight_only
PASS_NAME = "fuse_norm_and_activation_into_weight_only"
RNG = np.random.default_rng(0)


def run_pipeline(graph: Graph, skip=()) -> Graph:
    for graph_pass in PIPELINE:
        if graph_pass not in skip:
            graph = graph_pass(graph)
    return graph


def weight_only_ops(graph: Graph) -> dict[str, Node]:
    """'layers.0.attn.qkv' -> its weight_only_linear"""
    return {n.weights["weight"].rsplit(".", 1)[0]: n for n in graph.nodes if n.op == "weight_only_linear"}


def is_fused(node: Node) -> tuple[bool, bool]:
    return "norm_weight" in node.weights, node.attrs.get("activation") == "silu_mul"


# --------------------------------------------------------------------------- the pass on a small graph

def norm_gemm_silu(*, n: int = 32, k: int = 64, group: int = 64, bits: int = 4, dtype: str = "bfloat16",
                   out_dtype: str | None = None, norm: str = "add_rms_norm", norm_dim: int | None = None,
                   pre: bool = False, bias: bool = False) -> Graph:
    """add_rms_norm(a, b) -> h, sum (or rms_norm(a) -> h); weight_only_linear(h) -> y; silu_mul(y) -> out."""
    act = dtype_to_numpy(dtype)
    lo, hi = (-8, 8) if bits == 4 else (-128, 128)
    q = RNG.integers(lo, hi, size=(n, k)).astype(np.int8)
    weights = {"norm": np.ones(norm_dim or k, act), "w": pack_int4(q) if bits == 4 else q,
               "w_scale": np.full((n, k // group), 0.01, act)}
    gemm_weights = {"weight": "w", "weight_scale": "w_scale"}
    if pre:
        weights["pre"] = np.ones(k, act)
        gemm_weights["pre_quant_scale"] = "pre"
    if bias:
        weights["bias"] = np.ones(n, act)
        gemm_weights["bias"] = "bias"
    x = TensorType((NUM_TOKENS, k), dtype)
    values = {"a": x, "b": x, "h": x, "sum": x, "y": TensorType((NUM_TOKENS, n), out_dtype or dtype),
              "out": TensorType((NUM_TOKENS, n // 2), out_dtype or dtype)}
    inputs, outputs = (["a", "b"], ["h", "sum"]) if norm == "add_rms_norm" else (["a"], ["h"])
    nodes = [Node(norm, inputs, outputs, {"eps": 1e-5}, {"weight": "norm"}),
             Node("weight_only_linear", ["h"], ["y"], {"weight_bits": bits, "group_size": group,
                                                      "weight_layout": "row_major"}, gemm_weights),
             Node("silu_mul", ["y"], ["out"])]
    return Graph(inputs, ["out", *outputs[1:]], nodes, values, weights)


def test_norm_gemm_and_silu_mul_become_one_op_in_the_norms_place():
    graph = norm_gemm_silu()
    fused = FUSION(graph)
    assert [n.op for n in fused.nodes] == ["weight_only_linear"]
    (op,) = fused.nodes
    assert op.inputs == ["a", "b"] and op.outputs == ["out", "sum"]
    assert op.weights == {"weight": "w", "weight_scale": "w_scale", "norm_weight": "norm"}
    assert op.attrs["norm_eps"] == 1e-5 and op.attrs["activation"] == "silu_mul"
    assert "h" not in fused.values and "y" not in fused.values
    assert fused.meta["passes"][PASS_NAME] == 2
    verify_engine_graph(fused)
    assert [n.op for n in graph.nodes] == ["add_rms_norm", "weight_only_linear", "silu_mul"]  # pure


def test_a_plain_rms_norm_fuses_with_one_input_and_output():
    (op,) = FUSION(norm_gemm_silu(norm="rms_norm")).nodes
    assert op.inputs == ["a"] and op.outputs == ["out"] and is_fused(op) == (True, True)


@pytest.mark.parametrize("kw,expected", [
    (dict(bits=8), (False, False)),                    # int8: the CUDA-core GEMV, no tile kernel
    (dict(n=24), (False, False)),                      # N not a multiple of 16
    (dict(group=32), (False, False)),                  # a group inside a tile's 64 inputs
    (dict(k=96, group=96), (False, False)),            # K not a multiple of 64
    (dict(out_dtype="float32"), (False, False)),       # output dtype is not the input's
    (dict(pre=True), (False, True)),                   # a pre_quant_scale applies between norm and GEMM
    (dict(norm="rms_norm", norm_dim=16), (False, True)),  # a per-head norm
    (dict(bias=True), (True, False)),                  # the tile GEMV's silu_mul epilogue takes no bias
], ids=["int8", "n24", "g32", "k96", "out_float32", "pre_quant_scale", "per_head_norm", "bias"])
def test_only_what_the_tile_kernel_runs_is_fused(kw, expected):
    fused = FUSION(norm_gemm_silu(**kw))
    op = next(n for n in fused.nodes if n.op == "weight_only_linear")
    assert is_fused(op) == expected
    assert fused.meta["passes"][PASS_NAME] == sum(expected)


def test_values_with_other_readers_are_not_fused():
    graph = norm_gemm_silu()
    graph.values["h2"] = TensorType((NUM_TOKENS, 32), "bfloat16")
    graph.nodes.append(Node("silu_mul", ["h"], ["h2"]))   # the norm's output read twice
    graph.outputs += ["h2", "y"]                           # y a graph output
    op = next(n for n in FUSION(graph).nodes if n.op == "weight_only_linear")
    assert is_fused(op) == (False, False)


# --------------------------------------------------------------------------- the pass on a tiny Llama

LLAMA = dict(intermediate_size=128, num_hidden_layers=3)  # every int4 GEMM tile-eligible at group 64


@pytest.mark.parametrize("algo,group", [("W4A16", None), ("W4A16_AWQ", 64)], ids=["int4_wo", "int4_awq_g64"])
def test_llama_qkv_takes_its_norm_and_gate_up_its_norm_and_silu_mul(algo, group):
    graph = quantized(algo, group_size=group, **LLAMA)
    fused, unfused = run_pipeline(graph), run_pipeline(graph, skip=(FUSION,))
    verify_engine_graph(fused)
    assert fused.meta["passes"][PASS_NAME] == 3 * 3   # per layer: two norms, one silu_mul
    counts = fused.op_counts()
    assert "silu_mul" not in counts and "rms_norm" not in counts
    assert counts["add_rms_norm"] == 1                 # the final norm: gather_rows reads it
    ops = weight_only_ops(fused)
    for i in range(3):
        qkv, gate_up = ops[f"layers.{i}.attn.qkv"], ops[f"layers.{i}.mlp.gate_up"]
        assert is_fused(qkv) == (True, False)
        assert len(qkv.inputs) == len(qkv.outputs) == (1 if i == 0 else 2)  # layer 0 reads the embedding
        assert is_fused(gate_up) == (True, True) and len(gate_up.inputs) == len(gate_up.outputs) == 2
        for name in (f"layers.{i}.attn.o", f"layers.{i}.mlp.down"):
            assert is_fused(ops[name]) == (False, False) and len(ops[name].inputs) == 1
    np.testing.assert_array_equal(run_graph(fused, IDS)["logits"], run_graph(unfused, IDS)["logits"])


def test_llama_norms_stay_apart_while_awq_scales_are_unfolded():
    graph = run_pipeline(quantized("W4A16_AWQ", group_size=64, **LLAMA), skip=(fold_pre_quant_scales,))
    ops = weight_only_ops(graph)
    assert "pre_quant_scale" in ops["layers.0.attn.qkv"].weights
    assert not any(is_fused(op)[0] for op in ops.values())
    assert [name for name, op in ops.items() if is_fused(op)[1]] == [f"layers.{i}.mlp.gate_up" for i in range(3)]


@pytest.mark.parametrize("algo,group,shape", [("W8A16", None, {}), ("W4A16_AWQ", 16, {}),
                                              ("W4A16", None, dict(hidden_size=96, num_attention_heads=6))],
                         ids=["int8_wo", "int4_awq_g16", "hidden96"])
def test_llama_gemms_the_tile_kernel_does_not_run_stay_unfused(algo, group, shape):
    graph = run_pipeline(quantized(algo, group_size=group, **{**LLAMA, **shape}))
    assert graph.meta["passes"][PASS_NAME] == 0
    assert graph.op_counts()["silu_mul"] == 3


# --------------------------------------------------------------------------- opset verification

def fused_graph(norm: str = "add_rms_norm") -> tuple[Graph, Node]:
    graph = FUSION(norm_gemm_silu(norm=norm))
    return graph, graph.nodes[0]


def test_verify_accepts_each_v4_form():
    verify_engine_graph(fused_graph("rms_norm")[0])                       # x -> y, norm and silu_mul
    verify_engine_graph(FUSION(norm_gemm_silu(pre=True)))                  # silu_mul only
    graph, op = fused_graph()
    graph.values["out"] = TensorType((NUM_TOKENS, 32), "bfloat16")
    del op.attrs["activation"]
    verify_engine_graph(graph)                                             # a, b -> y, sum; norm only


def _drop_norm(graph: Graph, op: Node) -> None:
    del op.weights["norm_weight"], op.attrs["norm_eps"]


def _drop_sum(graph: Graph, op: Node) -> None:
    op.outputs.pop()
    graph.outputs.remove("sum")


def _drop_eps(graph: Graph, op: Node) -> None:
    del op.attrs["norm_eps"]


def _gelu(graph: Graph, op: Node) -> None:
    op.attrs["activation"] = "gelu"


def _full_width_output(graph: Graph, op: Node) -> None:
    graph.values["out"] = TensorType((NUM_TOKENS, 32), "bfloat16")


def _short_norm_weight(graph: Graph, op: Node) -> None:
    graph.weights["norm"] = graph.weights["norm"][:16]


@pytest.mark.parametrize("edit,match", [
    (_drop_norm, "a second input \\(the residual\\) needs a norm_weight"),
    (_drop_sum, "expects 1 inputs / 1 outputs or 2 inputs / 2 outputs, got 2 / 1"),
    (_drop_eps, "a norm_weight needs a norm_eps attr"),
    (_gelu, "activation 'gelu' is not one of silu_mul"),
    (_full_width_output, "silu_mul needs an even N and an output of N / 2 columns; N = 32, output 32"),
    (_short_norm_weight, "norm_weight must be \\[64\\], got \\[16\\]"),
], ids=["residual_without_norm", "no_sum_output", "no_norm_eps", "unknown_activation", "output_width",
        "norm_weight_shape"])
def test_verify_rejects_a_malformed_fused_op(edit, match):
    graph, op = fused_graph()
    edit(graph, op)
    with pytest.raises(GraphError, match=match):
        verify_engine_graph(graph)


def test_verify_keeps_other_ops_at_one_arity():
    graph = norm_gemm_silu()
    graph.nodes[2].inputs.append("a")
    with pytest.raises(GraphError, match="silu_mul .* expects 1 inputs / 1 outputs, got 2 / 1"):
        verify_engine_graph(graph)


# --------------------------------------------------------------------------- CPU engines

PROMPTS = [[5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11], [54, 90, 2, 33, 71, 9]]  # ids the char tokenizer makes
ENGINE_BUILD = BuildConfig(max_batch_size=4, max_num_tokens=64, target="cpu", gather_context_logits=True)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """hidden 64, intermediate 128: int4 qkv (128 x 64) and gate_up (256 x 64) are tile-eligible."""
    import tiny_hf

    return tiny_hf.save_trained_scale_llama(tmp_path_factory.mktemp("tiny_llama"))


def convert_int4(model_dir, out, scheme: str, dtype: str):
    options = QuantOptions(scheme, calib_size=4, calib_seq_len=64, calibrator="builtin",
                           group_size=64 if scheme == "int4_awq" else None)
    convert(model_dir, out, dtype, 1, options)
    return out


def build_without_fusion(checkpoint, out, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(passes, "PIPELINE", tuple(p for p in PIPELINE if p is not FUSION))
        return build(checkpoint, out, ENGINE_BUILD)


def generate(engine_dir) -> dict:
    """A prefill of two requests together, then four decode steps of both."""
    from trtllm_runtime import ModelRunner

    with ModelRunner.from_dir(engine_dir) as runner:
        return runner.generate(PROMPTS, max_new_tokens=4, end_id=-1, return_dict=True, return_context_logits=True,
                               return_generation_logits=True)


def fused_op_counts(engine_dir) -> tuple[int, int]:
    from trtllm_runtime import Engine

    ops = [op for op in Engine.open(engine_dir / "rank0.engine").ops if op["op"] == "weight_only_linear"]
    return (sum("norm_weight" in op["weights"] for op in ops),
            sum(op["attrs"].get("activation") == "silu_mul" for op in ops))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("scheme", ["int4_wo", "int4_awq"])
def test_cpu_engine_of_the_fused_graph_gives_the_unfused_engines_logits_bit_for_bit(tiny_llama, tmp_path,
                                                                                   monkeypatch, scheme, dtype):
    checkpoint = convert_int4(tiny_llama, tmp_path / "ckpt", scheme, dtype)
    fused_dir = build(checkpoint, tmp_path / "fused", ENGINE_BUILD)
    unfused_dir = build_without_fusion(checkpoint, tmp_path / "unfused", monkeypatch)
    assert fused_op_counts(fused_dir) == (2 * 2, 2) and fused_op_counts(unfused_dir) == (0, 0)
    fused, unfused = generate(fused_dir), generate(unfused_dir)
    assert fused["output_ids"] == unfused["output_ids"]
    for r in range(len(PROMPTS)):
        assert fused["context_logits"][r].shape == (len(PROMPTS[r]), 128)
        assert fused["generation_logits"][r].shape[0] == 4
        assert np.array_equal(fused["context_logits"][r], unfused["context_logits"][r])
        assert np.array_equal(fused["generation_logits"][r], unfused["generation_logits"][r])


@pytest.fixture(scope="module")
def int4_engines(tiny_llama, tmp_path_factory):
    """(fused, unfused) float32 int4_wo engine dirs."""
    out = tmp_path_factory.mktemp("int4_engines")
    checkpoint = convert_int4(tiny_llama, out / "ckpt", "int4_wo", "float32")
    with pytest.MonkeyPatch.context() as monkeypatch:
        return build(checkpoint, out / "fused", ENGINE_BUILD), build_without_fusion(checkpoint, out / "unfused",
                                                                                     monkeypatch)


def edited_engine(engine_dir, tmp_path, edit):
    """A copy of the engine dir whose engine metadata went through `edit(meta)`."""
    copy = tmp_path / "engine"
    shutil.copytree(engine_dir, copy)
    rebuild(copy / "rank0.engine", edit_json(edit))
    return copy


def _gate_up(meta: dict) -> dict:
    return next(op for op in meta["ops"] if op["attrs"].get("activation") == "silu_mul")


def _unknown_activation(meta: dict) -> None:
    _gate_up(meta)["attrs"]["activation"] = "gelu"


def _no_sum_output(meta: dict) -> None:
    _gate_up(meta)["outputs"].pop()


def _residual_without_norm(meta: dict) -> None:
    op = _gate_up(meta)
    del op["weights"]["norm_weight"], op["attrs"]["norm_eps"]


@pytest.mark.parametrize("edit,match", [
    (_unknown_activation, "weight_only_linear activation 'gelu' is not one of silu_mul"),
    (_no_sum_output, "weight_only_linear takes x -> y, or with a norm_weight a, b -> y, sum; got 2 inputs / 1 outputs"),
    (_residual_without_norm, "with a norm_weight a, b -> y, sum; got 2 inputs / 2 outputs"),
], ids=["unknown_activation", "no_sum_output", "residual_without_norm"])
def test_engine_loading_rejects_a_malformed_fused_op(int4_engines, tmp_path, edit, match):
    from trtllm_runtime import EngineFormatError, ModelRunner

    engine = edited_engine(int4_engines[0], tmp_path, edit)
    with pytest.raises(EngineFormatError, match=match):
        ModelRunner.from_dir(engine)


@pytest.mark.parametrize("opset", [2, 3])
def test_engines_of_earlier_op_sets_still_load_and_run(int4_engines, tmp_path, opset):
    engine = edited_engine(int4_engines[1], tmp_path, lambda meta: meta.update(opset_version=opset))
    assert generate(engine)["output_ids"] == generate(int4_engines[1])["output_ids"]


def test_engine_of_a_later_op_set_is_refused(int4_engines, tmp_path):
    from trtllm_runtime import EngineFormatError, ModelRunner

    engine = edited_engine(int4_engines[0], tmp_path, lambda meta: meta.update(opset_version=5))
    with pytest.raises(EngineFormatError, match="engine uses op set v5, this runtime runs v1 to v4"):
        ModelRunner.from_dir(engine)


def test_inspect_counts_the_fused_ops(int4_engines, capsys):
    from trtllm_build.cli.build import main as build_main

    assert build_main(["--inspect", str(int4_engines[0])]) == 0
    out = capsys.readouterr().out
    assert "weight layouts: row_major x8; weight_only_linear with a fused norm x4, with a fused silu_mul x2" in out
