"""NVIDIA ModelOpt as the calibrator (trtllm_build/quantization/modelopt_calibrate.py) on a tiny
Llama: the checkpoint holds the scales on ModelOpt's quantizer modules and its fake-quantized
weights, and our CPU engine computes what ModelOpt's fake-quant model computes in torch."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from test_quantization import PROMPT, engine_logits
from trtllm_build.build import BuildConfig, build
from trtllm_build.config import ConfigError
from trtllm_build.convert import convert, load_checkpoint
from trtllm_build.quantization import modelopt_calibrate, numerics
from trtllm_build.quantization.options import QuantOptions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
needs_modelopt = pytest.mark.skipif(modelopt_calibrate.modelopt_unavailable() is not None,
                                    reason=modelopt_calibrate.modelopt_unavailable() or "")

CALIB = dict(calib_size=4, calib_seq_len=64, calibrator="modelopt")
CASES = {"fp8": QuantOptions("fp8", **CALIB), "int8_sq": QuantOptions("int8_sq", **CALIB),
         "int4_awq": QuantOptions("int4_awq", group_size=16, **CALIB),
         "fp8_kv_fp8": QuantOptions("fp8", kv_cache="fp8", **CALIB),
         "int8_sq_lm_head": QuantOptions("int8_sq", quantize_lm_head=True, **CALIB),
         "int4_awq_lm_head": QuantOptions("int4_awq", group_size=16, quantize_lm_head=True, **CALIB)}
LINEARS = {"attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj",
           "attn.o": "self_attn.o_proj", "mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj",
           "mlp.down": "mlp.down_proj"}
# Max |engine - fake quant| / max |logit|. Both run float32 on the same quantized values and
# differ by float32 summation order only: measured <= 8e-7 here. The bound leaves room for the
# rare value that order moves across a rounding boundary of an activation quantizer (one fp8/int8
# step of one element); a wrong scale moves the logits by far more (quantization itself: 0.1-0.25).
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import tiny_hf

    return tiny_hf.save_trained_scale_llama(tmp_path_factory.mktemp("tiny_llama"))


def convert_with_modelopt(model_dir, ckpt, options: QuantOptions):
    """convert(), also returning the ModelOptScales (and so the fake-quant model) it wrote the checkpoint from."""
    made = []
    calibrate = modelopt_calibrate.calibrate_with_modelopt

    def recording(*args, **kwargs):
        made.append(calibrate(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modelopt_calibrate, "calibrate_with_modelopt", recording)
        convert(model_dir, ckpt, "float32", 1, options)
    return made[0]


@pytest.fixture(scope="module", params=list(CASES))
def calibrated(request, tiny_llama, tmp_path_factory):
    """(engine dir, checkpoint (config, weights), ModelOpt's fake-quant model the checkpoint was read from)."""
    out = tmp_path_factory.mktemp(request.param)
    scales = convert_with_modelopt(tiny_llama, out / "ckpt", CASES[request.param])
    engine = build(out / "ckpt", out / "engine", BuildConfig(max_batch_size=2, max_num_tokens=64, target="cpu",
                                                             gather_context_logits=True))
    return engine, load_checkpoint(out / "ckpt"), scales.model


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0].double().numpy()


@needs_modelopt
def test_engine_matches_modelopt_fake_quant_model(calibrated, tiny_llama):
    engine, _, fake_quant = calibrated
    ours, reference = engine_logits(engine), torch_logits(fake_quant)
    unquantized = torch_logits(transformers.AutoModelForCausalLM.from_pretrained(tiny_llama).eval())
    scale = np.max(np.abs(reference))
    error = np.max(np.abs(ours - reference)) / scale
    print(f"engine vs ModelOpt fake quant {error:.2e}, fake quant vs float {np.max(np.abs(reference - unquantized)) / scale:.3f}")
    assert error < TOLERANCE
    assert np.max(np.abs(reference - unquantized)) / scale > 3 * TOLERANCE  # the reference is quantized


def quantizer_scale(quantizer) -> np.ndarray:
    return (quantizer.amax.float() / quantizer.maxbound).numpy()


def fake_quant_weight(module) -> np.ndarray:
    with torch.no_grad():
        return module.weight_quantizer(module.weight).numpy()


def dequantized_weight(weights, name: str, algo: str) -> np.ndarray:
    w, scale = weights[f"{name}.weight"], np.asarray(weights[f"{name}.weight_scale"], np.float32)
    if algo == "FP8":
        return np.asarray(w, np.float32) * scale[0]
    if algo == "W8A8_SQ_PER_CHANNEL":
        return np.asarray(w, np.float32) * scale[:, None]
    return numerics.dequantize_weight_only(w, scale, 4)


@needs_modelopt
def test_checkpoint_holds_the_scales_and_weights_of_modelopts_quantizers(calibrated):
    _, (config, weights), model = calibrated
    qc = config.quantization
    assert qc.source == "modelopt calibration"
    linears = [(f"layers.{i}.{ours}", model.get_submodule(f"model.layers.{i}.{theirs}"))
               for i in range(config.num_hidden_layers) for ours, theirs in LINEARS.items()]
    if qc.quantize_lm_head:
        linears.append(("lm_head", model.get_output_embeddings()))
    else:
        assert not model.get_output_embeddings().weight_quantizer.is_enabled
    for name, module in linears:
        np.testing.assert_allclose(np.asarray(weights[f"{name}.weight_scale"]).reshape(-1),
                                   quantizer_scale(module.weight_quantizer).reshape(-1), rtol=1e-6)
        np.testing.assert_allclose(dequantized_weight(weights, name, qc.quant_algo), fake_quant_weight(module),
                                   rtol=1e-6, atol=1e-7)
        if f"{name}.input_scale" in weights:
            np.testing.assert_allclose(weights[f"{name}.input_scale"], quantizer_scale(module.input_quantizer),
                                       rtol=1e-6)
        if qc.quant_algo == "W4A16_AWQ":  # ModelOpt's block is our group (16 here: the model is small)
            assert module.weight_quantizer.block_sizes[-1] == qc.group_size == 16
        if f"{name}.pre_quant_scale" in weights:
            np.testing.assert_array_equal(weights[f"{name}.pre_quant_scale"],
                                          module.input_quantizer.pre_quant_scale.numpy())
    for i in range(config.num_hidden_layers):
        attn = model.get_submodule(f"model.layers.{i}.self_attn")
        if qc.kv_cache_quant_algo:
            k, v = quantizer_scale(attn.k_bmm_quantizer), quantizer_scale(attn.v_bmm_quantizer)
            np.testing.assert_allclose(weights[f"layers.{i}.attn.kv_scale"], k, rtol=1e-6)
            assert k == v  # one scale per layer for both


def test_auto_falls_back_to_the_builtin_calibrator_without_modelopt(tiny_llama, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(modelopt_calibrate, "modelopt_unavailable", lambda config: "ModelOpt is not installed (test)")
    options = QuantOptions("fp8", calib_size=2, calib_seq_len=32)
    with caplog.at_level(logging.WARNING):
        config = convert(tiny_llama, tmp_path / "ckpt", "float32", 1, options)
    assert config.quantization.source == "builtin calibration"
    assert "ModelOpt is not installed (test); calibrating with the built-in calibrator instead" in caplog.text
    with pytest.raises(ConfigError, match="--calibrator modelopt: ModelOpt is not installed"):
        convert(tiny_llama, tmp_path / "ckpt2", "float32", 1, dataclasses.replace(options, calibrator="modelopt"))
    assert not (tmp_path / "ckpt2").exists()


@needs_modelopt
def test_modelopt_calibrates_the_llama_family_only():
    import tiny_hf
    from trtllm_build.convert import model_config_from_hf

    assert modelopt_calibrate.modelopt_unavailable(model_config_from_hf(tiny_hf.hf_config("qwen3").to_dict())) is None
    gpt2 = model_config_from_hf(tiny_hf.hf_config("gpt2").to_dict())
    assert "supports the llama family here, not gpt2" in modelopt_calibrate.modelopt_unavailable(gpt2)
