"""Import of checkpoints quantized by NVIDIA ModelOpt: synthetic exports written the way ModelOpt
0.47 writes them (unified_export_hf: weight / weight_scale / input_scale / pre_quant_scale, int4
packed along the output dim, k_proj.k_scale; export_tensorrt_llm_checkpoint: fused qkv,
weights_scaling_factor, activation_scaling_factor, kv_cache_scaling_factor)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from trtllm_build.build import BuildConfig, build
from trtllm_build.convert import ConvertError, convert, load_checkpoint
from trtllm_build.quantization import numerics
from trtllm_build.quantization.modelopt_import import detect, unpack_modelopt_int4
from trtllm_build.safetensors_io import read_safetensors, write_safetensors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    import tiny_hf

    model = tiny_hf.trained_scale_llama(seed=2)
    path = tmp_path_factory.mktemp("float")
    model.save_pretrained(path)
    return path, {k: v.numpy().copy() for k, v in model.state_dict().items()}


def modelopt_pack_int4(q: np.ndarray) -> np.ndarray:
    """ModelOpt's pack_int4_in_uint8 for a 2-D weight: pairs of output rows share a byte."""
    u = q.astype(np.uint8) & 0x0F
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


def write_hf_export(float_model, out, algo: str):
    src, state = float_model
    out.mkdir()
    for name in ("config.json",):
        shutil.copy(src / name, out / name)
    tensors, layers = {}, json.loads((src / "config.json").read_text())["num_hidden_layers"]
    rng = np.random.default_rng(0)
    for name, value in state.items():
        module = name.removesuffix(".weight")
        if not module.endswith(PROJ):
            tensors[name] = value
            continue
        if algo == "FP8":
            scale = np.float32(np.abs(value).max() / 448)
            tensors[name] = numerics.to_fp8(value / scale)
            tensors[f"{module}.weight_scale"] = np.array(scale, np.float32)  # a 0-d scalar, as ModelOpt writes
            tensors[f"{module}.input_scale"] = np.array(0.02, np.float32)
        else:  # W4A16_AWQ, group 16; the q/k/v and gate/up pre_quant_scales are shared
            group = "qkv" if "self_attn" in module and not module.endswith("o_proj") else module
            group = "gate_up" if module.endswith(("gate_proj", "up_proj")) else group
            key = module.rsplit(".", 2)[0] + group
            pre = pre_scales.setdefault(key, rng.uniform(0.5, 2.0, value.shape[1]).astype(np.float32))
            q, scale = numerics.quantize_groupwise(value / pre, 4, 16, np.dtype(np.float32))
            tensors[name] = modelopt_pack_int4(q)
            tensors[f"{module}.weight_scale"] = scale
            tensors[f"{module}.pre_quant_scale"] = pre
    for i in range(layers):
        tensors[f"model.layers.{i}.self_attn.k_proj.k_scale"] = np.array(0.01, np.float32)
        tensors[f"model.layers.{i}.self_attn.v_proj.v_scale"] = np.array(0.02, np.float32)
    write_safetensors(out / "model.safetensors", tensors)
    quant = {"quant_algo": algo, "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}
    if algo == "W4A16_AWQ":
        quant["group_size"] = 16
    (out / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt", "version": "0.47.0"},
                                                          "quantization": quant}))
    return tensors


pre_scales: dict[str, np.ndarray] = {}


def test_fp8_hf_export_is_read_as_is_and_builds(float_model, tmp_path):
    tensors = write_hf_export(float_model, tmp_path / "export", "FP8")
    assert detect(tmp_path / "export") == "modelopt_hf"
    config = convert(tmp_path / "export", tmp_path / "ckpt", "float32")
    assert (config.quantization.quant_algo, config.quantization.kv_cache_quant_algo) == ("FP8", "FP8")
    _, ckpt = load_checkpoint(tmp_path / "ckpt")
    # o_proj has no fused partner: its fp8 bytes and scales are the export's
    np.testing.assert_array_equal(ckpt["layers.1.attn.o.weight"].view(np.uint8),
                                  tensors["model.layers.1.self_attn.o_proj.weight"].view(np.uint8))
    assert ckpt["layers.1.attn.o.weight_scale"][0] == tensors["model.layers.1.self_attn.o_proj.weight_scale"]
    # q/k/v had different scales: requantized to the largest, shared
    scales = [ckpt[f"layers.0.attn.{p}.weight_scale"][0] for p in "qkv"]
    assert len(set(scales)) == 1 and scales[0] == max(tensors[f"model.layers.0.self_attn.{p}_proj.weight_scale"]
                                                      for p in "qkv")
    assert ckpt["layers.0.attn.kv_scale"][0] == np.float32(0.02)  # max of k_scale, v_scale
    engine = build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu", max_num_tokens=64))
    assert (engine / "rank0.engine").is_file()


def test_int4_awq_hf_export_unpacks_modelopt_packing(float_model, tmp_path):
    tensors = write_hf_export(float_model, tmp_path / "export", "W4A16_AWQ")
    config = convert(tmp_path / "export", tmp_path / "ckpt", "float32")
    assert config.quantization.group_size == 16
    _, ckpt = load_checkpoint(tmp_path / "ckpt")
    theirs = unpack_modelopt_int4(tensors["model.layers.0.mlp.down_proj.weight"])
    np.testing.assert_array_equal(numerics.unpack_int4(ckpt["layers.0.mlp.down.weight"]), theirs)
    np.testing.assert_array_equal(ckpt["layers.0.mlp.down.pre_quant_scale"],
                                  tensors["model.layers.0.mlp.down_proj.pre_quant_scale"])
    build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu", max_num_tokens=64))


def test_export_with_quant_flags_is_refused(float_model, tmp_path):
    from trtllm_build.quantization.options import QuantOptions

    write_hf_export(float_model, tmp_path / "export", "FP8")
    with pytest.raises(ConvertError, match="already quantized"):
        convert(tmp_path / "export", tmp_path / "ckpt", "float32", 1, QuantOptions("int8_wo"))


def test_tensorrt_llm_fp8_export_splits_the_fused_qkv(float_model, tmp_path):
    _, state = float_model
    hf = json.loads((float_model[0] / "config.json").read_text())
    out = tmp_path / "trtllm"
    out.mkdir()
    tensors = {"transformer.vocab_embedding.weight": state["model.embed_tokens.weight"],
               "transformer.ln_f.weight": state["model.norm.weight"], "lm_head.weight": state["lm_head.weight"]}
    names = {"attention.dense": "self_attn.o_proj", "mlp.fc": "mlp.gate_proj", "mlp.gate": "mlp.up_proj",
             "mlp.proj": "mlp.down_proj"}
    for i in range(hf["num_hidden_layers"]):
        p, t = f"model.layers.{i}.", f"transformer.layers.{i}."
        tensors[t + "input_layernorm.weight"] = state[p + "input_layernorm.weight"]
        tensors[t + "post_layernorm.weight"] = state[p + "post_attention_layernorm.weight"]
        qkv = np.concatenate([state[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        fused = {"attention.qkv": qkv, **{k: state[p + v + ".weight"] for k, v in names.items()}}
        for name, w in fused.items():
            scale = np.float32(np.abs(w).max() / 448)
            tensors[t + name + ".weight"] = numerics.to_fp8(w / scale)
            tensors[t + name + ".weights_scaling_factor"] = np.array([scale], np.float32)
            tensors[t + name + ".activation_scaling_factor"] = np.array([0.03], np.float32)
        tensors[t + "attention.kv_cache_scaling_factor"] = np.array([0.05], np.float32)
    write_safetensors(out / "rank0.safetensors", tensors)
    config = {"architecture": "LlamaForCausalLM", "dtype": "float32", "vocab_size": hf["vocab_size"],
              "hidden_size": hf["hidden_size"], "intermediate_size": hf["intermediate_size"],
              "num_hidden_layers": hf["num_hidden_layers"], "num_attention_heads": hf["num_attention_heads"],
              "num_key_value_heads": hf["num_key_value_heads"], "max_position_embeddings": 256,
              "norm_epsilon": hf["rms_norm_eps"], "rotary_base": 10000.0, "mapping": {"tp_size": 1},
              "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}
    (out / "config.json").write_text(json.dumps(config))
    assert detect(out) == "modelopt_trtllm"
    convert(out, tmp_path / "ckpt", "float32")
    _, ckpt = load_checkpoint(tmp_path / "ckpt")
    q_rows = hf["num_attention_heads"] * 8
    np.testing.assert_array_equal(ckpt["layers.1.attn.q.weight"].view(np.uint8),
                                  tensors["transformer.layers.1.attention.qkv.weight"][:q_rows].view(np.uint8))
    assert ckpt["layers.1.attn.kv_scale"][0] == np.float32(0.05)
    build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu", max_num_tokens=64))


def test_unsupported_tensorrt_llm_algo_fails_clearly(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"architecture": "LlamaForCausalLM", "quantization": {
        "quant_algo": "W4A8_AWQ"}, "mapping": {"tp_size": 1}, "num_attention_heads": 4, "hidden_size": 64,
        "vocab_size": 128, "intermediate_size": 128, "num_hidden_layers": 1, "max_position_embeddings": 64}))
    write_safetensors(tmp_path / "x" / "rank0.safetensors", {"a": np.zeros(1, np.float32)})
    with pytest.raises(ConvertError, match="quant_algo 'W4A8_AWQ' is not supported for import"):
        convert(tmp_path / "x", tmp_path / "ckpt")
