"""trtllm-build: the traced, optimized graph computes what Hugging Face computes; the CLI builds,
inspects and fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graph_reference import run_graphs
from trtllm_build.build import BuildConfig, build
from trtllm_build.cli.build import main
from trtllm_build.convert import convert, load_checkpoint
from trtllm_build.models import trace
from trtllm_build.passes import optimize
from trtllm_build.safetensors_io import read_safetensors, write_safetensors
from trtllm_runtime import Engine

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = [5, 17, 99, 3, 42, 8, 77, 1, 64, 23, 11]


def hf_logits(model_dir, ids) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def engine_graph_logits(ckpt, tp: int, ids) -> np.ndarray:
    graphs = []
    for rank in range(tp):
        config, weights = load_checkpoint(ckpt, rank)
        graphs.append(optimize(trace(config, weights), max_num_tokens=64, max_output_rows=64))
    logits = run_graphs(graphs, np.array(ids), output_rows=list(range(len(ids))))["logits"]
    return logits[:, : config.vocab_size]


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("family", ["llama3", "llama_tied", "mistral", "qwen2", "qwen3", "gpt2"])
def test_engine_graph_computes_the_hf_logits(hf_models, tmp_path, family, tp):
    model_dir, _ = hf_models[family]
    convert(model_dir, tmp_path / "ckpt", "float32", tp)
    ours = engine_graph_logits(tmp_path / "ckpt", tp, PROMPT)
    ref = hf_logits(model_dir, PROMPT)
    assert ours.shape == ref.shape
    # float64 graph vs float32 HF: the difference is HF's rounding, ~1e-6 of the logit scale
    assert np.max(np.abs(ours - ref)) <= 1e-4 * np.max(np.abs(ref)), np.max(np.abs(ours - ref))


@pytest.fixture
def ckpt(hf_models, tmp_path):
    convert(hf_models["qwen3"][0], tmp_path / "ckpt", "bfloat16", 2)
    return tmp_path / "ckpt"


def test_build_writes_one_engine_per_rank_with_config_and_plan(ckpt, tmp_path):
    out = build(ckpt, tmp_path / "engine", BuildConfig(max_batch_size=4, max_num_tokens=128, target="cpu"))
    config = json.loads((out / "config.json").read_text())
    assert config["engine_files"] == ["rank0.engine", "rank1.engine"]
    assert config["build_config"]["max_seq_len"] == 256  # the model's max_position_embeddings
    for rank in range(2):
        engine = Engine.open(out / f"rank{rank}.engine", expected_target="cpu")
        assert engine.build_options["tp_rank"] == rank
        assert engine.memory_plan["max_num_tokens"] == 128
        ops = [op["op"] for op in engine.ops]
        # Each row-parallel output's all-reduce carries the residual norm after it (the last: the final norm).
        assert ops.count("attention") == 2 and ops.count("all_reduce_add_rms_norm") == 4 and ops.count("all_gather") == 1
        assert "all_reduce" not in ops and "add_rms_norm" not in ops
        shard = read_safetensors(ckpt / f"rank{rank}.safetensors")
        np.testing.assert_array_equal(engine.weights["layers.1.attn.o.weight"], shard["layers.1.attn.o.weight"])
        qkv = np.concatenate([shard[f"layers.0.attn.{p}.weight"] for p in "qkv"])
        np.testing.assert_array_equal(engine.weights["layers.0.attn.qkv.weight"], qkv)


def test_parallel_workers_build_the_same_engines(ckpt, tmp_path):
    one = build(ckpt, tmp_path / "a", BuildConfig(target="cpu"), workers=1)
    two = build(ckpt, tmp_path / "b", BuildConfig(target="cpu"), workers=2)
    for rank in range(2):
        assert (one / f"rank{rank}.engine").read_bytes() == (two / f"rank{rank}.engine").read_bytes()


def test_context_logits_option_sizes_logits_for_every_token(ckpt, tmp_path):
    out = build(ckpt, tmp_path / "e", BuildConfig(max_batch_size=4, max_num_tokens=128, target="cpu",
                                                  gather_context_logits=True))
    plan = Engine.open(out / "rank0.engine").memory_plan
    assert plan["max_output_rows"] == 128
    assert plan["tensors"]["logits"]["bytes"] == 128 * 128 * 4  # rows x vocab x float32


def test_inspect_prints_ops_fusions_plan_weights_and_target(ckpt, tmp_path, capsys):
    assert main(["--checkpoint-dir", str(ckpt), "--output-dir", str(tmp_path / "e"), "--target", "cpu"]) == 0
    capsys.readouterr()
    assert main(["--inspect", str(tmp_path / "e"), "--verbose"]) == 0
    text = capsys.readouterr().out
    for needle in ("rank1.engine: target cpu", "attention x2", "fuse_qkv 2", "fuse_gate_up 2",
                   "fuse_residual_norm 4", "insert_tp_collectives 5", "fuse_all_reduce_norm 4", "memory plan: arena", "weights:",
                   "layers.0.attn.qkv.weight"):
        assert needle in text, needle


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-size", "64", "--max-num-tokens", "8"], "max_num_tokens (8) must be >= max_batch_size (64)"),
    (["--max-seq-len", "-1"], "max_seq_len must be >= 1"),
    (["--workers", "0"], "workers must be >= 1"),
])
def test_bad_options_fail_with_one_line_and_no_output(ckpt, tmp_path, capsys, argv, message):
    out = tmp_path / "engine"
    assert main(["--checkpoint-dir", str(ckpt), "--output-dir", str(out), "--target", "cpu", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trtllm-build: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_a_checkpoint_missing_a_tensor_fails_cleanly(ckpt, tmp_path, capsys):
    shard = dict(read_safetensors(ckpt / "rank1.safetensors"))
    del shard["layers.1.mlp.up.weight"]
    write_safetensors(ckpt / "rank1.safetensors", shard)
    out = tmp_path / "engine"
    assert main(["--checkpoint-dir", str(ckpt), "--output-dir", str(out), "--target", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "layers.1.mlp.up.weight" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".engine*"))


def test_missing_checkpoint_dir_and_unrelated_output_dir_are_refused(ckpt, tmp_path, capsys):
    assert main(["--checkpoint-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "e")]) == 2
    assert "does not exist" in capsys.readouterr().err
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["--checkpoint-dir", str(ckpt), "--output-dir", str(precious), "--target", "cpu"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_inspect_of_a_non_engine_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["--inspect", str(tmp_path)]) == 2
    assert "not an engine dir" in capsys.readouterr().err
