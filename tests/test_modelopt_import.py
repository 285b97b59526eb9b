"""Import of checkpoints quantized by NVIDIA ModelOpt: synthetic exports written the way ModelOpt
0.47 writes them (unified_export_hf: weight / weight_scale / input_scale / pre_quant_scale, int4
packed along the output dim, k_proj.k_scale; export_tensorrt_llm_checkpoint: fused qkv,
weights_scaling_factor, activation_scaling_factor, prequant_scaling_factor, kv_cache_scaling_factor,
embedding and lm_head padded to a multiple of 64 rows)."""

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


def write_trtllm_export(float_model, out, modules, quant, kv_scale: float | None = None):
    """ModelOpt's TensorRT-LLM export of a model whose linears are `modules` (HF module name ->
    our roles: weight, weight_scale, input_scale, pre_quant_scale): TensorRT-LLM names, q/k/v
    fused (rows concatenated, per-tensor and input-side scales shared), embedding and lm_head
    padded to a multiple of 64 rows. Returns the tensors written."""
    src, state = float_model
    hf = json.loads((src / "config.json").read_text())
    rope = dict(hf["rope_parameters"])
    theirs = {"weight": "weight", "weight_scale": "weights_scaling_factor", "input_scale": "activation_scaling_factor",
              "pre_quant_scale": "prequant_scaling_factor"}
    pad = lambda w: np.concatenate([w, np.zeros((-w.shape[0] % 64 or 64, w.shape[1]), w.dtype)])  # noqa: E731
    trt = {"transformer.vocab_embedding.weight": pad(state["model.embed_tokens.weight"]),
           "transformer.ln_f.weight": state["model.norm.weight"], "lm_head.weight": pad(state["lm_head.weight"])}
    names = {"attention.dense": "self_attn.o_proj", "mlp.fc": "mlp.gate_proj", "mlp.gate": "mlp.up_proj",
             "mlp.proj": "mlp.down_proj"}
    per_row = lambda k, v: k == "weight" or (k == "weight_scale" and v.shape[0] > 1)  # noqa: E731
    for i in range(hf["num_hidden_layers"]):
        p, t = f"model.layers.{i}.", f"transformer.layers.{i}."
        trt[t + "input_layernorm.weight"] = state[p + "input_layernorm.weight"]
        trt[t + "post_layernorm.weight"] = state[p + "post_attention_layernorm.weight"]
        qkv = [modules[p + f"self_attn.{x}_proj"] for x in "qkv"]
        fused = {"attention.qkv": {k: np.concatenate([m[k] for m in qkv]) if per_row(k, v) else v
                                   for k, v in qkv[0].items()},
                 **{k: modules[p + v] for k, v in names.items()}}
        for name, parts in fused.items():
            trt |= {f"{t}{name}.{theirs[k]}": v for k, v in parts.items()}
        if kv_scale is not None:
            trt[t + "attention.kv_cache_scaling_factor"] = np.array([kv_scale], np.float32)
    out.mkdir()
    write_safetensors(out / "rank0.safetensors", trt)
    config = {"architecture": "LlamaForCausalLM", "dtype": "float32", "vocab_size": hf["vocab_size"],
              "hidden_size": hf["hidden_size"], "intermediate_size": hf["intermediate_size"],
              "num_hidden_layers": hf["num_hidden_layers"], "num_attention_heads": hf["num_attention_heads"],
              "num_key_value_heads": hf["num_key_value_heads"], "max_position_embeddings": 256,
              "norm_epsilon": hf["rms_norm_eps"], "rotary_base": rope.pop("rope_theta"),
              "rotary_scaling": rope, "mapping": {"tp_size": 1}, "quantization": quant}
    (out / "config.json").write_text(json.dumps(config))
    return trt


def test_tensorrt_llm_fp8_export_splits_the_fused_qkv(float_model, tmp_path):
    _, state = float_model
    modules = {}
    for name, value in state.items():
        module = name.removesuffix(".weight")
        if module.endswith(PROJ):  # q, k, v quantized against one scale: ModelOpt's fused-layer export
            layer = module.rsplit(".", 2)[0]
            group = [state[f"{layer}.self_attn.{x}_proj.weight"] for x in "qkv"] if module.endswith(PROJ[:3]) else [value]
            scale = np.float32(max(np.abs(w).max() for w in group) / 448)
            modules[module] = {"weight": numerics.to_fp8(value / scale), "weight_scale": np.array([scale], np.float32),
                               "input_scale": np.array([0.03], np.float32)}
    out = tmp_path / "trtllm"
    tensors = write_trtllm_export(float_model, out, modules, {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
                                  kv_scale=0.05)
    assert detect(out) == "modelopt_trtllm"
    convert(out, tmp_path / "ckpt", "float32")
    _, ckpt = load_checkpoint(tmp_path / "ckpt")
    q_rows = json.loads((float_model[0] / "config.json").read_text())["num_attention_heads"] * 8
    np.testing.assert_array_equal(ckpt["layers.1.attn.q.weight"].view(np.uint8),
                                  tensors["transformer.layers.1.attention.qkv.weight"][:q_rows].view(np.uint8))
    assert ckpt["layers.1.attn.kv_scale"][0] == np.float32(0.05)
    build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu", max_num_tokens=64))


def modelopt_quantize(state, algo: str, group: int = 16) -> dict[str, dict[str, np.ndarray]]:
    """Module -> its tensors the way ModelOpt quantizes them (W8A8_SQ_PER_CHANNEL or W4A16_AWQ):
    the weight divided by a pre_quant_scale that the layers reading one input (q/k/v, gate/up)
    share, as they share SmoothQuant's per-tensor input scale."""
    rng = np.random.default_rng(1)
    shared: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out = {}
    for name, value in state.items():
        module = name.removesuffix(".weight")
        if not module.endswith(PROJ):
            continue
        layer, leaf = module.rsplit(".", 2)[0], module.split(".", 3)[3]
        key = layer + ("qkv" if leaf in PROJ[:3] else "gate_up" if leaf in PROJ[4:6] else leaf)
        pre, x_scale = shared.setdefault(key, (rng.uniform(0.5, 2.0, value.shape[1]).astype(np.float32),
                                               np.array([rng.uniform(0.01, 0.05)], np.float32)))
        w = value / pre
        if algo == "W8A8_SQ_PER_CHANNEL":
            q, scale = numerics.quantize_int8_per_channel(w)
            out[module] = {"weight": q, "weight_scale": scale, "input_scale": x_scale, "pre_quant_scale": pre}
        else:
            q, scale = numerics.quantize_groupwise(w, 4, group, np.dtype(np.float32))
            out[module] = {"weight": modelopt_pack_int4(q), "weight_scale": scale, "pre_quant_scale": pre}
    return out


def write_both_exports(float_model, tmp_path, algo: str):
    """The same quantized model as ModelOpt's HF export and as its TensorRT-LLM export (q/k/v
    fused, TensorRT-LLM names, embedding and lm_head padded to a multiple of 64 rows)."""
    src, state = float_model
    modules = modelopt_quantize(state, algo)
    quant = {"quant_algo": algo, "exclude_modules": ["lm_head"]}
    if algo == "W4A16_AWQ":
        quant |= {"group_size": 16, "has_zero_point": False, "pre_quant_scale": True}
    hf_dir, trt_dir = tmp_path / "hf_export", tmp_path / "trtllm_export"
    hf_dir.mkdir()
    shutil.copy(src / "config.json", hf_dir / "config.json")
    tensors = {k: v for k, v in state.items() if not k.removesuffix(".weight").endswith(PROJ)}
    for module, parts in modules.items():
        tensors |= {f"{module}.{k}": v for k, v in parts.items()}
    write_safetensors(hf_dir / "model.safetensors", tensors)
    (hf_dir / "hf_quant_config.json").write_text(json.dumps({"quantization": quant}))
    write_trtllm_export(float_model, trt_dir, modules, quant)
    return hf_dir, trt_dir, modules


@pytest.mark.parametrize("algo", ["W8A8_SQ_PER_CHANNEL", "W4A16_AWQ"])
def test_tensorrt_llm_export_reads_as_the_same_model_as_the_hf_export(float_model, tmp_path, algo, caplog):
    hf_dir, trt_dir, modules = write_both_exports(float_model, tmp_path, algo)
    assert detect(trt_dir) == "modelopt_trtllm"
    with caplog.at_level("WARNING", logger="trtllm_build"):
        convert(hf_dir, tmp_path / "ckpt_hf", "float32")
        config = convert(trt_dir, tmp_path / "ckpt_trt", "float32")
    assert "not used" not in caplog.text  # every scale of either export went into the checkpoint
    assert config.quantization.quant_algo == algo
    _, from_hf = load_checkpoint(tmp_path / "ckpt_hf")
    _, from_trt = load_checkpoint(tmp_path / "ckpt_trt")
    assert sorted(from_trt) == sorted(from_hf)
    for name, value in from_hf.items():
        np.testing.assert_array_equal(from_trt[name], value, err_msg=name)
    # and against what was quantized: v's rows of the fused qkv, its scales, the shared ones
    v = modules["model.layers.1.self_attn.v_proj"]
    if algo == "W4A16_AWQ":
        np.testing.assert_array_equal(numerics.unpack_int4(from_trt["layers.1.attn.v.weight"]),
                                      unpack_modelopt_int4(v["weight"]))
    else:
        np.testing.assert_array_equal(from_trt["layers.1.attn.v.weight"], v["weight"])
        np.testing.assert_array_equal(from_trt["layers.1.attn.v.input_scale"], v["input_scale"])
    np.testing.assert_array_equal(from_trt["layers.1.attn.v.weight_scale"].reshape(-1), v["weight_scale"].reshape(-1))
    np.testing.assert_array_equal(from_trt["layers.1.attn.v.pre_quant_scale"], v["pre_quant_scale"])
    vocab = json.loads((trt_dir / "config.json").read_text())["vocab_size"]
    assert from_trt["embed.weight"].shape[0] == vocab  # ModelOpt's padding rows dropped
    build(tmp_path / "ckpt_trt", tmp_path / "engine", BuildConfig(target="cpu", max_num_tokens=64))


def test_tensorrt_llm_awq_export_without_pre_quant_scales_scales_by_one(float_model, tmp_path):
    _, trt_dir, _ = write_both_exports(float_model, tmp_path, "W4A16_AWQ")
    tensors = read_safetensors(trt_dir / "rank0.safetensors")
    write_safetensors(trt_dir / "rank0.safetensors",
                      {k: v for k, v in tensors.items() if not k.endswith("prequant_scaling_factor")})
    convert(trt_dir, tmp_path / "ckpt", "float32")
    _, ckpt = load_checkpoint(tmp_path / "ckpt")
    for name in ("layers.0.attn.q", "layers.0.mlp.down"):
        np.testing.assert_array_equal(ckpt[f"{name}.pre_quant_scale"], np.ones_like(ckpt[f"{name}.pre_quant_scale"]))


def test_a_quantized_lm_head_in_an_hf_export_stays_quantized(float_model, tmp_path, caplog):
    # ModelOpt's presets exclude lm_head; an export that quantized it asked for it: read as is.
    write_hf_export(float_model, tmp_path / "export", "FP8")
    tensors = read_safetensors(tmp_path / "export" / "model.safetensors")
    w = tensors["lm_head.weight"]
    scale = np.float32(np.abs(w).max() / 448)
    tensors["lm_head.weight"] = numerics.to_fp8(w / scale)
    tensors["lm_head.weight_scale"] = np.array(scale, np.float32)
    tensors["lm_head.input_scale"] = np.array(0.02, np.float32)
    write_safetensors(tmp_path / "export" / "model.safetensors", tensors)
    with caplog.at_level("WARNING", logger="trtllm_build"):
        convert(tmp_path / "export", tmp_path / "ckpt", "float32")
    assert "not used" not in caplog.text
    config, ckpt = load_checkpoint(tmp_path / "ckpt")
    assert config.quantization.quantize_lm_head and config.vocab_size_padded % 64 == 0
    vocab = w.shape[0]
    np.testing.assert_array_equal(ckpt["lm_head.weight"][:vocab].view(np.uint8),
                                  tensors["lm_head.weight"].view(np.uint8))
    assert not ckpt["lm_head.weight"][vocab:].view(np.uint8).any()
    np.testing.assert_array_equal(ckpt["lm_head.weight_scale"], [scale])
    np.testing.assert_array_equal(ckpt["lm_head.input_scale"], [np.float32(0.02)])
    build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(max_batch_size=2, max_num_tokens=64, target="cpu"))


def test_a_quantized_lm_head_in_a_tensorrt_llm_awq_export_stays_quantized(float_model, tmp_path):
    _, trt_dir, _ = write_both_exports(float_model, tmp_path, "W4A16_AWQ")
    tensors = read_safetensors(trt_dir / "rank0.safetensors")
    w = tensors["lm_head.weight"]  # padded to a multiple of 64 rows
    pre = np.random.default_rng(3).uniform(0.5, 2.0, w.shape[1]).astype(np.float32)
    q, scale = numerics.quantize_groupwise(w / pre, 4, 16, np.dtype(np.float32))
    tensors |= {"lm_head.weight": modelopt_pack_int4(q), "lm_head.weights_scaling_factor": scale,
                "lm_head.prequant_scaling_factor": pre}
    write_safetensors(trt_dir / "rank0.safetensors", tensors)
    convert(trt_dir, tmp_path / "ckpt", "float32")
    config, ckpt = load_checkpoint(tmp_path / "ckpt")
    vocab = json.loads((trt_dir / "config.json").read_text())["vocab_size"]
    assert config.quantization.quantize_lm_head and config.vocab_size_padded % 64 == 0
    np.testing.assert_array_equal(numerics.unpack_int4(ckpt["lm_head.weight"])[:vocab], q[:vocab])
    np.testing.assert_array_equal(ckpt["lm_head.weight_scale"][:vocab], scale[:vocab])
    np.testing.assert_array_equal(ckpt["lm_head.pre_quant_scale"], pre)
    assert not ckpt["lm_head.weight"][vocab:].any() and np.all(ckpt["lm_head.weight_scale"][vocab:] == 1)
    build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(max_batch_size=2, max_num_tokens=64, target="cpu"))


def test_tensorrt_llm_awq_export_with_zero_points_is_refused(float_model, tmp_path):
    _, trt_dir, _ = write_both_exports(float_model, tmp_path, "W4A16_AWQ")
    config = json.loads((trt_dir / "config.json").read_text())
    config["quantization"]["has_zero_point"] = True
    (trt_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match="zero points are not supported"):
        convert(trt_dir, tmp_path / "ckpt")


def test_unsupported_tensorrt_llm_algo_fails_clearly(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"architecture": "LlamaForCausalLM", "quantization": {
        "quant_algo": "W4A8_AWQ"}, "mapping": {"tp_size": 1}, "num_attention_heads": 4, "hidden_size": 64,
        "vocab_size": 128, "intermediate_size": 128, "num_hidden_layers": 1, "max_position_embeddings": 64}))
    write_safetensors(tmp_path / "x" / "rank0.safetensors", {"a": np.zeros(1, np.float32)})
    with pytest.raises(ConvertError, match="quant_algo 'W4A8_AWQ' is not supported for import"):
        convert(tmp_path / "x", tmp_path / "ckpt")
