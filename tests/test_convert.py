"""trtllm_build.convert: HF checkpoints -> canonical, sharded checkpoint dirs.

References come from transformers' own state dicts (torch), never from the converter's tables.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from trtllm_build.cli.convert import main
from trtllm_build.config import ConfigError, ModelConfig
from trtllm_build.convert import checkpoint_shapes, convert, load_checkpoint, model_config_from_hf
from trtllm_build.safetensors_io import read_safetensors, write_safetensors
from tiny_hf import FAMILIES, hf_config as _hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

def _expected_llama(sd: dict[str, np.ndarray], layers: int, tied: bool) -> dict[str, np.ndarray]:
    exp = {"embed.weight": sd["model.embed_tokens.weight"], "final_norm.weight": sd["model.norm.weight"]}
    if not tied:
        exp["lm_head.weight"] = sd["lm_head.weight"]
    ours = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
            "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
            "self_attn.o_proj": "attn.o", "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
            "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up", "mlp.down_proj": "mlp.down"}
    for i in range(layers):
        for theirs, name in ours.items():
            for kind in ("weight", "bias"):
                key = f"model.layers.{i}.{theirs}.{kind}"
                if key in sd:
                    exp[f"layers.{i}.{name}.{kind}"] = sd[key]
    return exp


def _expected_gpt2(sd: dict[str, np.ndarray], layers: int, hidden: int) -> dict[str, np.ndarray]:
    exp = {"embed.weight": sd["transformer.wte.weight"], "pos_embed.weight": sd["transformer.wpe.weight"],
           "final_norm.weight": sd["transformer.ln_f.weight"], "final_norm.bias": sd["transformer.ln_f.bias"]}
    for i in range(layers):
        h = f"transformer.h.{i}."
        # Conv1D weights are [in, out]; c_attn's output columns are [q | k | v].
        qkv_w, qkv_b = sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"]
        for n, p in enumerate("qkv"):
            exp[f"layers.{i}.attn.{p}.weight"] = qkv_w[:, n * hidden:(n + 1) * hidden].T
            exp[f"layers.{i}.attn.{p}.bias"] = qkv_b[n * hidden:(n + 1) * hidden]
        exp[f"layers.{i}.attn.o.weight"] = sd[h + "attn.c_proj.weight"].T
        exp[f"layers.{i}.attn.o.bias"] = sd[h + "attn.c_proj.bias"]
        exp[f"layers.{i}.mlp.fc.weight"] = sd[h + "mlp.c_fc.weight"].T
        exp[f"layers.{i}.mlp.fc.bias"] = sd[h + "mlp.c_fc.bias"]
        exp[f"layers.{i}.mlp.proj.weight"] = sd[h + "mlp.c_proj.weight"].T
        exp[f"layers.{i}.mlp.proj.bias"] = sd[h + "mlp.c_proj.bias"]
        for ln, name in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
            exp[f"layers.{i}.{name}.weight"] = sd[h + ln + ".weight"]
            exp[f"layers.{i}.{name}.bias"] = sd[h + ln + ".bias"]
    return exp


def _expected(family: str, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if family == "gpt2":
        return _expected_gpt2(sd, layers=2, hidden=64)
    return _expected_llama(sd, layers=2, tied=family == "llama_tied")


@pytest.mark.parametrize("family", FAMILIES)
def test_family_converts_to_the_hf_tensors_under_canonical_names(hf_models, tmp_path, family) -> None:
    model_dir, sd = hf_models[family]
    config = convert(model_dir, tmp_path / "ckpt", "float32", 1)
    _, weights = load_checkpoint(tmp_path / "ckpt", 0)
    expected = _expected(family, sd)
    assert sorted(weights) == sorted(expected)
    for name, ref in expected.items():
        np.testing.assert_array_equal(weights[name], ref, err_msg=name)
    assert config == ModelConfig.load(tmp_path / "ckpt" / "config.json")


def test_family_config_fields(hf_models) -> None:
    def cfg(family: str) -> ModelConfig:
        return model_config_from_hf(json.loads((hf_models[family][0] / "config.json").read_text()))

    llama3 = cfg("llama3")
    assert (llama3.architecture, llama3.num_key_value_heads, llama3.head_dim) == ("llama", 4, 8)
    assert (llama3.rope.scaling_type, llama3.rope.theta, llama3.rope.factor) == ("llama3", 500000.0, 8.0)
    assert llama3.rope.original_max_position_embeddings == 64 and not llama3.tie_word_embeddings
    assert cfg("llama_tied").tie_word_embeddings and cfg("llama_tied").vocab_size == 130
    assert cfg("qwen2").qkv_bias and not cfg("qwen2").attn_out_bias
    qwen3 = cfg("qwen3")
    assert qwen3.qk_norm and qwen3.head_dim == 16 and not qwen3.qkv_bias
    gpt2 = cfg("gpt2")
    assert (gpt2.architecture, gpt2.norm_type, gpt2.hidden_act, gpt2.position_embedding) == \
        ("gpt2", "layer_norm", "gelu_tanh", "learned")
    assert gpt2.gated_mlp is False and gpt2.intermediate_size == 256 and gpt2.tie_word_embeddings
    assert gpt2.qkv_bias and gpt2.attn_out_bias and gpt2.mlp_bias
    assert gpt2.max_position_embeddings == 64 and gpt2.eos_token_id == [0]


# Split axis of each canonical tensor under TP: None = replicated.
def _split_axis(name: str) -> int | None:
    column = (".attn.q.", ".attn.k.", ".attn.v.", ".mlp.gate.", ".mlp.up.", ".mlp.fc.")
    if any(c in name for c in column) or name == "lm_head.weight":
        return 0
    if name.endswith(("attn.o.weight", "mlp.down.weight", "mlp.proj.weight")):
        return 1
    return None


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_tp_shards_concatenate_to_the_tp1_tensors(hf_models, tmp_path, family, tp) -> None:
    model_dir, _ = hf_models[family]
    convert(model_dir, tmp_path / "tp1", "float32", 1)
    _, full = load_checkpoint(tmp_path / "tp1", 0)
    config = convert(model_dir, tmp_path / "tpn", "float32", tp)
    assert config.mapping.tp_size == config.mapping.world_size == tp
    ranks = [load_checkpoint(tmp_path / "tpn", r)[1] for r in range(tp)]
    if config.tie_word_embeddings:  # tp 1 reuses embed; under TP each rank gets an lm_head shard
        full = {**full, "lm_head.weight": full["embed.weight"]}
    assert all(sorted(r) == sorted(full) for r in ranks)
    for name, ref in full.items():
        axis = _split_axis(name)
        if axis is None:
            for r in ranks:
                np.testing.assert_array_equal(r[name], ref, err_msg=name)
            continue
        joined = np.concatenate([r[name] for r in ranks], axis=axis)
        if name == "lm_head.weight":  # padded with zero rows up to a multiple of tp
            assert joined.shape[0] == config.vocab_size_padded and config.vocab_size_padded % tp == 0
            assert not joined[ref.shape[0]:].any()
            joined = joined[:ref.shape[0]]
        np.testing.assert_array_equal(joined, ref, err_msg=name)


def test_checkpoint_shapes_describe_each_rank(hf_models, tmp_path) -> None:
    config = convert(hf_models["llama_tied"][0], tmp_path / "ckpt", "float32", 4)
    shapes = checkpoint_shapes(config)
    assert shapes["lm_head.weight"] == (132 // 4, 64)
    assert shapes["layers.0.attn.q.weight"] == (16 * 4 // 4, 64)
    assert shapes["layers.0.attn.o.weight"] == (64, 16)
    assert shapes["layers.0.mlp.down.weight"] == (64, 32)


def _old_style(new: dict) -> dict:
    """The same model as a transformers 4 config.json: rope_theta/rope_scaling, torch_dtype."""
    old = {k: v for k, v in new.items() if k not in ("rope_parameters", "dtype", "head_dim")}
    params = dict(new["rope_parameters"])
    old["rope_theta"] = params.pop("rope_theta")
    rope_type = params.pop("rope_type")
    old["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **params}
    old["torch_dtype"] = new["dtype"]
    return old


@pytest.mark.parametrize("family", ["llama3", "mistral", "qwen2"])
def test_old_and_new_config_layouts_give_the_same_model_config(hf_models, family) -> None:
    new = json.loads((hf_models[family][0] / "config.json").read_text())
    assert "rope_parameters" in new and "dtype" in new
    assert model_config_from_hf(_old_style(new)) == model_config_from_hf(new)
    assert model_config_from_hf({**_old_style(new), "head_dim": None}) == model_config_from_hf(new)


def test_old_layout_with_rope_type_key_and_eos_list() -> None:
    old = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128,
           "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
           "bos_token_id": 1, "eos_token_id": [2, 3]}
    config = model_config_from_hf(old)
    assert config.dtype == "bfloat16" and config.head_dim == 16 and config.eos_token_id == [2, 3]
    assert config.rope.scaling_type == "llama3" and config.rope.theta == 500000.0
    assert model_config_from_hf(old, "float16").dtype == "float16"
    assert model_config_from_hf({k: v for k, v in old.items() if k != "torch_dtype"}).dtype == "bfloat16"


def test_generation_config_eos_ids_are_merged(hf_models, tmp_path) -> None:
    model_dir, _ = hf_models["llama3"]
    gen = json.loads((model_dir / "generation_config.json").read_text())
    local = tmp_path / "model"
    local.mkdir()
    for f in model_dir.iterdir():
        (local / f.name).symlink_to(f)
    (local / "generation_config.json").unlink()
    (local / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [2, 9]}))
    assert convert(local, tmp_path / "ckpt", "float32").eos_token_id == [2, 9]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes_round_like_torch(hf_models, tmp_path, dtype) -> None:
    model_dir, _ = hf_models["qwen2"]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    convert(model_dir, tmp_path / "ckpt", dtype)
    config, weights = load_checkpoint(tmp_path / "ckpt", 0)
    assert config.dtype == dtype
    ref = model.state_dict()["model.layers.1.self_attn.q_proj.weight"]
    got = weights["layers.1.attn.q.weight"]
    assert got.dtype == (ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16)
    np.testing.assert_array_equal(got.view(np.int16), ref.view(torch.int16).numpy())


def test_output_is_readable_by_the_safetensors_library(hf_models, tmp_path) -> None:
    safetensors = pytest.importorskip("safetensors")
    convert(hf_models["gpt2"][0], tmp_path / "ckpt", "bfloat16")
    _, ours = load_checkpoint(tmp_path / "ckpt", 0)
    with safetensors.safe_open(tmp_path / "ckpt" / "rank0.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == sorted(ours)
        for name in f.keys():
            t = f.get_tensor(name)
            assert t.dtype == torch.bfloat16
            np.testing.assert_array_equal(t.view(torch.int16).numpy(), ours[name].view(np.int16))


def test_dtype_auto_takes_the_config_dtype(hf_models, tmp_path) -> None:
    assert convert(hf_models["llama3"][0], tmp_path / "ckpt", "auto").dtype == "float32"
    assert convert(hf_models["llama3"][0], tmp_path / "ckpt", None).dtype == "float32"


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_sharded_safetensors_with_index_convert_the_same(hf_models, tmp_path) -> None:
    model_dir, sd = hf_models["qwen3"]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    convert(tmp_path / "sharded", tmp_path / "ckpt", "float32")
    _, weights = load_checkpoint(tmp_path / "ckpt", 0)
    for name, ref in _expected("qwen3", sd).items():
        np.testing.assert_array_equal(weights[name], ref, err_msg=name)


def test_pytorch_bin_weights_convert_the_same(hf_models, tmp_path) -> None:
    model_dir, sd = hf_models["mistral"]
    local = tmp_path / "bin"
    local.mkdir()
    (local / "config.json").write_text((model_dir / "config.json").read_text())
    torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sd.items()}, local / "pytorch_model.bin")
    convert(local, tmp_path / "ckpt", "bfloat16")
    _, weights = load_checkpoint(tmp_path / "ckpt", 0)
    ref = torch.from_numpy(sd["model.layers.0.mlp.down_proj.weight"]).to(torch.bfloat16)
    np.testing.assert_array_equal(weights["layers.0.mlp.down.weight"].view(np.int16),
                                  ref.view(torch.int16).numpy())


def test_gpt2_checkpoint_without_transformer_prefix(hf_models, tmp_path) -> None:
    # The original openai-community/gpt2 files name tensors "h.0.attn.c_attn.weight", "wte.weight".
    model_dir, sd = hf_models["gpt2"]
    local = _copy_model(model_dir, tmp_path / "gpt2")
    tensors = read_safetensors(local / "model.safetensors")
    write_safetensors(local / "model.safetensors",
                      {k.removeprefix("transformer."): np.array(v) for k, v in tensors.items()})
    convert(local, tmp_path / "ckpt", "float32")
    _, weights = load_checkpoint(tmp_path / "ckpt", 0)
    for name, ref in _expected("gpt2", sd).items():
        np.testing.assert_array_equal(weights[name], ref, err_msg=name)


def test_tokenizer_files_are_copied(hf_models, tmp_path) -> None:
    local = _copy_model(hf_models["llama3"][0], tmp_path / "model")
    (local / "tokenizer.json").write_text('{"fake": true}')
    (local / "tokenizer_config.json").write_text("{}")
    convert(local, tmp_path / "ckpt", "float32")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "ckpt" / name).read_bytes() == (local / name).read_bytes()


def test_mistral_sliding_window_is_warned_about(hf_models, tmp_path, caplog) -> None:
    local = _copy_model(hf_models["mistral"][0], tmp_path / "model")
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "sliding_window": 64}))
    with caplog.at_level(logging.WARNING, logger="trtllm_build"):
        convert(local, tmp_path / "ckpt", "float32")
    assert "sliding_window 64 is not applied" in caplog.text


def test_existing_checkpoint_dir_is_replaced_whole(hf_models, tmp_path) -> None:
    out = tmp_path / "ckpt"
    convert(hf_models["llama3"][0], out, "float32", 2)
    convert(hf_models["llama3"][0], out, "bfloat16", 1)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json",
                                                     "rank0.safetensors"]
    assert ModelConfig.load(out / "config.json").dtype == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind


def test_load_checkpoint_rejects_a_rank_out_of_range(hf_models, tmp_path) -> None:
    convert(hf_models["llama3"][0], tmp_path / "ckpt", "float32", 2)
    with pytest.raises(ConfigError, match="rank 2 is out of range for tp_size 2"):
        load_checkpoint(tmp_path / "ckpt", 2)


# ---------------------------------------------------------------------------- CLI errors

def _run_cli_error(capsys, tmp_path: Path, argv: list[str]) -> str:
    out = tmp_path / "out"
    before = set(tmp_path.iterdir())
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtllm-convert: error: "), err
    assert "Traceback" not in err
    assert not out.exists()
    assert set(tmp_path.iterdir()) == before  # and no temp dir left next to it
    return lines[0]


def test_cli_converts(hf_models, tmp_path, capsys) -> None:
    assert main(["--model-dir", str(hf_models["qwen2"][0]), "--output-dir", str(tmp_path / "c"),
                 "--dtype", "float16", "--tp-size", "2"]) == 0
    config = ModelConfig.load(tmp_path / "c" / "config.json")
    assert (config.dtype, config.tp_size) == ("float16", 2)


def test_cli_help_explains_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model-dir", "--output-dir", "--dtype", "--tp-size", "gguf", "default"):
        assert option in out


def test_cli_error_missing_model_dir(tmp_path, capsys) -> None:
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(tmp_path / "nope")])
    assert "nope" in msg and "does not exist" in msg


def test_cli_error_unsupported_architecture(hf_models, tmp_path, capsys) -> None:
    local = _copy_model(hf_models["llama3"][0], tmp_path / "model")
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "model_type": "bert",
                                                   "architectures": ["BertModel"]}))
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(local)])
    assert "model_type 'bert'" in msg and "not supported" in msg and "llama" in msg


def test_cli_error_missing_tensor(hf_models, tmp_path, capsys) -> None:
    local = _copy_model(hf_models["llama3"][0], tmp_path / "model")
    tensors = read_safetensors(local / "model.safetensors")
    write_safetensors(local / "model.safetensors", {k: np.array(v) for k, v in tensors.items()
                                                    if k != "model.layers.1.mlp.up_proj.weight"})
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(local)])
    assert "'model.layers.1.mlp.up_proj.weight'" in msg and "missing" in msg


def test_cli_error_shape_mismatch(hf_models, tmp_path, capsys) -> None:
    local = _copy_model(hf_models["llama3"][0], tmp_path / "model")
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(local)])
    assert "'model.layers.0.mlp.gate_proj.weight'" in msg and "(128, 64)" in msg and "(96, 64)" in msg


def test_cli_error_tp_size_does_not_divide_heads(hf_models, tmp_path, capsys) -> None:
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(hf_models["llama3"][0]), "--tp-size", "3"])
    assert "tp_size 3 does not divide num_attention_heads (8)" in msg


def test_cli_error_unsupported_rope_type(hf_models, tmp_path, capsys) -> None:
    local = _copy_model(hf_models["llama3"][0], tmp_path / "model")
    config = json.loads((local / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (local / "config.json").write_text(json.dumps(config))
    msg = _run_cli_error(capsys, tmp_path, ["--model-dir", str(local)])
    assert "rope type 'yarn' is not supported" in msg


def test_cli_refuses_to_replace_a_dir_that_is_not_a_checkpoint(hf_models, tmp_path, capsys) -> None:
    keep = tmp_path / "out"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["--model-dir", str(hf_models["llama3"][0]), "--output-dir", str(keep)]) == 2
    assert "is not empty and is not a checkpoint dir" in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "mine"


def test_cli_rejects_a_bad_tp_size_as_a_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--model-dir", "x", "--output-dir", str(tmp_path / "o"), "--tp-size", "0"])
    assert e.value.code == 2
    assert "--tp-size" in capsys.readouterr().err


def test_safetensors_models_convert_without_torch(hf_models, tmp_path) -> None:
    # torch and transformers made unimportable: the HF safetensors path needs neither, and a
    # pytorch_model.bin gives a clear error instead of an ImportError traceback.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((hf_models["llama3"][0] / "config.json").read_text())
    (bin_dir / "pytorch_model.bin").write_bytes(b"not read")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from trtllm_build.convert import ConvertError, convert\n"
        f"convert({str(hf_models['gpt2'][0])!r}, {str(tmp_path / 'ckpt')!r}, 'bfloat16', 2)\n"
        "try:\n"
        f"    convert({str(bin_dir)!r}, {str(tmp_path / 'ckpt2')!r})\n"
        "except ConvertError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "needs torch" in proc.stdout
    assert (tmp_path / "ckpt" / "rank1.safetensors").is_file()
