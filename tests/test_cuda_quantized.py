"""Quantized engines on the CUDA backend against the same checkpoint built for the CPU backend (the
exact emulation of the op contract): fp8 and int8 SmoothQuant in float32 and bfloat16, int8
weight-only, int4 AWQ (group 32) and the FP8 KV cache in bfloat16.

Both backends run the same quantized math; what may differ: the GEMMs' summation order (and
Hopper's limited-precision FP8 partial sums), the last bits of norms and activations (summation
order, expf), and from those a quantized activation code (or a bf16 rounding) moved to its
neighbour where a value sits on a boundary. Bounds, as max |logit difference| / max |logit|:

- fp8: the FP8 partial sums dominate, whatever the activation dtype. scripts/fp8_noise_sensitivity.py
  puts relative noise of 2^-14 (their precision) on every fp8_linear output of the model here
  in the float64 graph interpreter, and its context logits move by 2.7e-2 to 3.9e-2 of the scale
  (4 seeds); a float32 fp8 engine on an H100 measured 4.3e-2. Hence 6e-2 in both dtypes.
- int8_sq: the int8 GEMM is exact, so in float32 only the last bits of norms and activations
  differ (2e-2); bfloat16 6e-2.
- weight-only and the FP8 KV cache (bfloat16): bf16 rounding flips compounded over the layers, 3e-2.

Greedy tokens must be identical for all 16 new tokens unless the first difference is a near tie
in the CPU logits (top-2 gap within the stated tie bound): a different summation order may flip
a tie, never a clear choice.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_quantization import tiny_llama  # noqa: F401  (fixture: tiny_hf.save_trained_scale_llama, GEMM dims multiples of 16)
from trtllm_build.build import BuildConfig, BuildError, build
from trtllm_build.convert import convert
from trtllm_build.quantization.options import QuantOptions
from trtllm_runtime import Engine, ModelRunner, _core

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11, 54, 90, 2, 33, 71], [7, 2, 90], [33]]
NEW_TOKENS = 16
# (logit bound, near-tie bound), both as fractions of the logit scale; see the module docstring.
GEMM_BOUNDS = {("fp8", "float32"): (6e-2, 12e-2), ("fp8", "bfloat16"): (6e-2, 12e-2),
               ("int8_sq", "float32"): (2e-2, 4e-2), ("int8_sq", "bfloat16"): (6e-2, 12e-2)}
# int4_awq g32: the interleaved layout; g64: every layer of the tiny model in the mma-tile layout.
WEIGHT_ONLY = {"int8_wo": QuantOptions("int8_wo"), "int4_awq": QuantOptions("int4_awq", group_size=32),
               "int4_awq_g64": QuantOptions("int4_awq", group_size=64), "kv_fp8": QuantOptions(None, kv_cache="fp8")}
WEIGHT_ONLY_BOUNDS = (3e-2, 1e-2)


def convert_quantized(model_dir, ckpt, options: QuantOptions, dtype: str):
    convert(model_dir, ckpt, dtype, 1, dataclasses.replace(options, calib_size=4, calib_seq_len=64))
    return ckpt


def build_for(ckpt, out, target: str):
    return build(ckpt, out, BuildConfig(max_batch_size=4, max_num_tokens=64, target=target, gather_context_logits=True))


def generate(engine):
    with ModelRunner.from_dir(engine) as runner:
        return runner.generate(PROMPTS, max_new_tokens=NEW_TOKENS, end_id=-1, return_dict=True,
                               return_context_logits=True, return_generation_logits=True)


def assert_gpu_matches_cpu(ckpt, tmp_path, logit_bound: float, tie_bound: float, label: str) -> Engine:
    """Builds the checkpoint for both targets, generates, compares; returns the CUDA engine."""
    gpu_engine, cpu_engine = build_for(ckpt, tmp_path / "gpu", "cuda"), build_for(ckpt, tmp_path / "cpu", "cpu")
    gpu, cpu = generate(gpu_engine), generate(cpu_engine)
    for i in range(len(PROMPTS)):
        scale = np.abs(cpu["context_logits"][i]).max()
        err = np.abs(np.asarray(gpu["context_logits"][i]) - cpu["context_logits"][i]).max() / scale
        first = np.abs(np.asarray(gpu["generation_logits"][i][0]) - cpu["generation_logits"][i][0]).max() / scale
        print(f"{label} prompt {i}: context logits differ by {err:.2e}, first generated {first:.2e} of the scale")
        assert err <= logit_bound and first <= logit_bound, f"prompt {i}"
        ours, theirs = gpu["output_ids"][i], cpu["output_ids"][i]
        j = next((j for j in range(NEW_TOKENS) if ours[j] != theirs[j]), None)
        if j is not None:
            logits = np.asarray(cpu["generation_logits"][i][j])
            gap = abs(logits[theirs[j]] - logits[ours[j]])
            assert gap <= tie_bound * np.abs(logits).max(), f"prompt {i}: token {j} differs, not a near tie ({gap:.3g})"
    return Engine.open(gpu_engine / "rank0.engine", expected_target="cuda", sm_arch=_core.cuda_device_sm_arch())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("scheme", ["fp8", "int8_sq"])
def test_quantized_gemm_engine_on_gpu_matches_cpu_emulation(tiny_llama, tmp_path, scheme, dtype):  # noqa: F811
    ckpt = convert_quantized(tiny_llama, tmp_path / "ckpt", QuantOptions(scheme), dtype)
    engine = assert_gpu_matches_cpu(ckpt, tmp_path, *GEMM_BOUNDS[scheme, dtype], f"{scheme} {dtype}")
    qdtype = "float8_e4m3fn" if scheme == "fp8" else "int8"
    assert {"fp8_linear" if scheme == "fp8" else "int8_linear", "quantize"} <= {op["op"] for op in engine.ops}
    assert any(key.split(":")[1] == qdtype for key in engine.tactics["gemm"]["shapes"]), "quantized GEMMs not tuned"


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", list(WEIGHT_ONLY))
def test_weight_only_and_kv_cache_engine_on_gpu_matches_cpu(tiny_llama, tmp_path, scheme):  # noqa: F811
    ckpt = convert_quantized(tiny_llama, tmp_path / "ckpt", WEIGHT_ONLY[scheme], "bfloat16")
    engine = assert_gpu_matches_cpu(ckpt, tmp_path, *WEIGHT_ONLY_BOUNDS, scheme)
    if WEIGHT_ONLY[scheme].scheme is not None:  # weight-only linears: the CUDA layout and a timed path per bucket
        layouts = {op["attrs"]["weight_layout"] for op in engine.ops if op["op"] == "weight_only_linear"}
        # int4 tiles hold 64 inputs, a group 32 cannot take them; int8 tiles 32 (per channel here)
        assert layouts == {"cuda_k_interleaved_v1" if scheme == "int4_awq" else "cuda_mma_tiles_v1"}
        shapes = engine.tactics["weight_only"]["shapes"]
        assert len(shapes) == 4 and all(e["path"] in ("gemv", "dequant_gemm") for v in shapes.values() for e in v.values())


def test_cuda_build_rejects_a_quantized_gemm_not_aligned_to_16(tmp_path):
    """hidden 40: the quantized GEMMs have k = 40; the CUDA target says why before it needs a GPU."""
    import tiny_hf

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**tiny_hf.SMALL, "hidden_size": 40}, num_attention_heads=4,
                                      num_key_value_heads=2, rope_parameters=tiny_hf.LLAMA3_ROPE)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "hf")
    tiny_hf.save_char_tokenizer(tmp_path / "hf")
    ckpt = convert_quantized(tmp_path / "hf", tmp_path / "ckpt", QuantOptions("fp8"), "bfloat16")
    with pytest.raises(BuildError, match="multiples of 16"):
        build_for(ckpt, tmp_path / "engine", "cuda")


def test_tactic_shapes_include_the_quantized_gemms_keyed_by_input_dtype():
    from trtllm_build.tactics import gemm_shapes

    ops = [{"op": "quantize", "inputs": ["h"], "outputs": ["x8"], "weights": {"out_scale": "s"}},
           {"op": "fp8_linear", "inputs": ["xf"], "outputs": ["y"], "weights": {"weight": "wf"}},
           {"op": "int8_linear", "inputs": ["x8"], "outputs": ["y"], "weights": {"weight": "wi", "bias": "b"}}]
    plan = {"tensors": {"h": {"dtype": "bfloat16"}, "xf": {"dtype": "float8_e4m3fn"}, "x8": {"dtype": "int8"},
                        "y": {"dtype": "bfloat16"}}}
    shapes = gemm_shapes(ops, plan, {"wf": (64, 32), "wi": (48, 32), "s": (1,)})
    assert shapes == {"64x32:float8_e4m3fn:bfloat16:nobias": (64, 32, "float8_e4m3fn", "bfloat16", False),
                      "48x32:int8:bfloat16:bias": (48, 32, "int8", "bfloat16", True)}


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["fp8", "int8_sq", "int8_wo", "int4_awq"])
def test_quantized_lm_head_engine_on_gpu_matches_cpu(tiny_llama, tmp_path, scheme):  # noqa: F811
    # --quantize-lm-head: the quantized GEMM writes the float32 logits itself.
    options = {**WEIGHT_ONLY, "fp8": QuantOptions("fp8"), "int8_sq": QuantOptions("int8_sq")}[scheme]
    ckpt = convert_quantized(tiny_llama, tmp_path / "ckpt", dataclasses.replace(options, quantize_lm_head=True),
                             "bfloat16")
    bounds = WEIGHT_ONLY_BOUNDS if scheme in WEIGHT_ONLY else GEMM_BOUNDS[scheme, "bfloat16"]
    engine = assert_gpu_matches_cpu(ckpt, tmp_path, *bounds, f"{scheme} lm_head")
    head = engine.ops[-1]
    assert head["op"] != "linear" and head["weights"]["weight"].startswith("lm_head")
    if scheme in WEIGHT_ONLY:
        assert any(key.endswith(":out_float32") for key in engine.tactics["weight_only"]["shapes"])
