"""Quantized engines end to end on a tiny Llama: convert (calibrating in torch) -> build -> run
on the CPU backend. Each engine is held to (1) the float64 reference interpreter running the
same quantized graph (the kernels emulate the op contract exactly, so only float32 summation
order and the rare rounding flip it causes differ) and (2) the unquantized engine, within the
measured error bound of its scheme."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from graph_reference import run_graphs
from trtllm_build.build import BuildConfig, build
from trtllm_build.config import ConfigError
from trtllm_build.convert import convert, load_checkpoint
from trtllm_build.models import trace
from trtllm_build.passes import optimize
from trtllm_build.quantization.options import QuantOptions
from trtllm_build.safetensors_io import read_safetensors, write_safetensors
from trtllm_runtime.model_runner import ModelRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = [5, 17, 69, 3, 42, 8, 77, 1, 64, 23, 11, 54, 90, 2, 33, 71]  # ids the char tokenizer makes
# Max |logit error| / max |logit| vs the unquantized float32 engine on this model, as measured
# (fp8 0.146, int8_sq 0.107, int8_wo 0.028, int4_wo 0.50, int4_awq g16 0.395, FP8 KV cache 0.080)
# plus about 30%. A 2-layer model of width 64 with random weights averages little error away;
# the README's SmolLM2 perplexities are the quality numbers.
BOUNDS = {"fp8": 0.19, "int8_sq": 0.14, "int8_wo": 0.037, "int4_wo": 0.65, "int4_awq": 0.52, "kv_fp8": 0.105}
# The built-in calibrator (ModelOpt's: tests/test_modelopt_calibrate.py).
SCHEMES = {"fp8": QuantOptions("fp8"), "int8_sq": QuantOptions("int8_sq"), "int8_wo": QuantOptions("int8_wo"),
           "int4_wo": QuantOptions("int4_wo"), "int4_awq": QuantOptions("int4_awq", group_size=16),
           "kv_fp8": QuantOptions(None, kv_cache="fp8")}
SCHEMES = {name: dataclasses.replace(options, calibrator="builtin") for name, options in SCHEMES.items()}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny Llama (GQA, llama3 rope) with weights of a trained model's scale, and a char tokenizer."""
    import tiny_hf

    return tiny_hf.save_trained_scale_llama(tmp_path_factory.mktemp("tiny_llama"))


def engine_logits(engine_dir, ids=PROMPT) -> np.ndarray:
    with ModelRunner.from_dir(engine_dir) as runner:
        handle = runner.submit(ids, max_new_tokens=1, end_id=-1, return_context_logits=True)
        context = None
        for response in handle.responses():
            context = response.get("context_logits", context)
    return np.asarray(context, np.float64)


def build_quantized(model_dir, out, options: QuantOptions | None, dtype="float32", tp=1):
    if options is not None:
        options = dataclasses.replace(options, calib_size=4, calib_seq_len=64)
    convert(model_dir, out / "ckpt", dtype, tp, options)
    return build(out / "ckpt", out / "engine", BuildConfig(max_batch_size=4, max_num_tokens=64, target="cpu",
                                                           gather_context_logits=True))


@pytest.fixture(scope="module")
def float_logits(tiny_llama, tmp_path_factory):
    return engine_logits(build_quantized(tiny_llama, tmp_path_factory.mktemp("float"), None))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantized_engine_runs_the_quantized_math_and_stays_within_its_bound(tiny_llama, float_logits, tmp_path,
                                                                              scheme):
    engine = build_quantized(tiny_llama, tmp_path, SCHEMES[scheme])
    ours = engine_logits(engine)
    config, weights = load_checkpoint(tmp_path / "ckpt")
    graph = optimize(trace(config, weights), max_num_tokens=64, max_output_rows=64)
    reference = run_graphs([graph], np.array(PROMPT), output_rows=list(range(len(PROMPT))))["logits"]
    scale = np.max(np.abs(float_logits))
    emulation_error = np.max(np.abs(ours - reference)) / scale
    quantization_error = np.max(np.abs(ours - float_logits)) / scale
    print(f"{scheme}: vs reference {emulation_error:.2e}, vs float engine {quantization_error:.4f}")
    assert emulation_error < 2e-3
    assert quantization_error < BOUNDS[scheme]
    assert quantization_error > 0  # it is quantized


@pytest.mark.parametrize("scheme", ["int8_sq", "int4_awq", "fp8"])
def test_tensor_parallel_quantized_engine_graph_matches_tp1(tiny_llama, tmp_path, scheme):
    options = dataclasses.replace(SCHEMES[scheme], calib_size=4, calib_seq_len=64)
    logits = []
    for tp in (1, 2):
        convert(tiny_llama, tmp_path / f"tp{tp}", "float32", tp, options)
        graphs = [optimize(trace(*load_checkpoint(tmp_path / f"tp{tp}", r)), max_num_tokens=64, max_output_rows=64)
                  for r in range(tp)]
        logits.append(run_graphs(graphs, np.array(PROMPT))["logits"][:, :128])
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-6, atol=1e-6 * np.abs(logits[0]).max())


def test_bfloat16_int4_awq_engine_runs(tiny_llama, tmp_path, float_logits):
    ours = engine_logits(build_quantized(tiny_llama, tmp_path, SCHEMES["int4_awq"], dtype="bfloat16"))
    assert np.max(np.abs(ours - float_logits)) / np.max(np.abs(float_logits)) < BOUNDS["int4_awq"]


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_build_rejects_a_checkpoint_with_a_zero_or_nan_scale(tiny_llama, tmp_path, bad):
    convert(tiny_llama, tmp_path / "ckpt", "float32", 1, dataclasses.replace(SCHEMES["fp8"], calib_size=2,
                                                                              calib_seq_len=32))
    weights = dict(read_safetensors(tmp_path / "ckpt" / "rank0.safetensors"))
    weights["layers.1.mlp.down.input_scale"] = np.array([bad], np.float32)
    write_safetensors(tmp_path / "ckpt" / "rank0.safetensors", weights)
    with pytest.raises(ConfigError, match="layers.1.mlp.down.input_scale.*finite and > 0"):
        build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu"))


def test_build_rejects_a_checkpoint_with_a_missing_scale(tiny_llama, tmp_path):
    convert(tiny_llama, tmp_path / "ckpt", "float32", 1, SCHEMES["int8_wo"])
    weights = dict(read_safetensors(tmp_path / "ckpt" / "rank0.safetensors"))
    del weights["layers.0.attn.q.weight_scale"]
    write_safetensors(tmp_path / "ckpt" / "rank0.safetensors", weights)
    with pytest.raises(ConfigError, match="missing.*layers.0.attn.q.weight_scale"):
        build(tmp_path / "ckpt", tmp_path / "engine", BuildConfig(target="cpu"))


def test_awq_group_size_falls_back_when_128_does_not_divide(tiny_llama, tmp_path, caplog):
    config = convert(tiny_llama, tmp_path / "ckpt", "float32", 1,
                     QuantOptions("int4_awq", calib_size=2, calib_seq_len=32, calibrator="builtin"))
    assert config.quantization.group_size == 64  # hidden 64, intermediate 128
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["quantization"]["group_size"] == 64


def test_convert_cli_quantizes_and_inspect_names_the_quantized_ops(tiny_llama, tmp_path, capsys):
    from trtllm_build.cli.build import main as build_main
    from trtllm_build.cli.convert import main as convert_main

    assert convert_main(["--model-dir", str(tiny_llama), "--output-dir", str(tmp_path / "ckpt"), "--dtype",
                         "float32", "--quant", "int8_sq", "--kv-cache", "fp8", "--calib-size", "2",
                         "--calib-seq-len", "32", "--smoothquant-alpha", "0.6", "--calibrator", "builtin"]) == 0
    assert build_main(["--checkpoint-dir", str(tmp_path / "ckpt"), "--output-dir", str(tmp_path / "engine"),
                       "--target", "cpu", "--max-num-tokens", "64"]) == 0
    capsys.readouterr()
    assert build_main(["--inspect", str(tmp_path / "engine")]) == 0
    out = capsys.readouterr().out
    assert "quantization: W8A8_SQ_PER_CHANNEL; int8_linear x8" in out
    assert "unquantized linears: lm_head.weight" in out and "KV cache: FP8" in out


def test_convert_cli_rejects_bad_quant_flags(tiny_llama, tmp_path, capsys):
    from trtllm_build.cli.convert import main as convert_main

    args = ["--model-dir", str(tiny_llama), "--output-dir", str(tmp_path / "ckpt")]
    assert convert_main(args + ["--quant", "int8_wo", "--group-size", "64"]) == 2
    assert "--group-size applies to --quant int4_awq only" in capsys.readouterr().err
    assert convert_main(args + ["--quant", "int8_sq", "--smoothquant-alpha", "1.5"]) == 2
    assert "--smoothquant-alpha must lie in [0, 1]" in capsys.readouterr().err
    assert convert_main(args + ["--quant", "int4_awq", "--group-size", "48"]) == 2
    assert "group_size 48 does not divide" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_cpu_backend_refuses_an_engine_in_the_cuda_weight_layout(tiny_llama, tmp_path, monkeypatch):
    import trtllm_build.build as build_module
    from trtllm_build.passes.weight_layout import relayout_weight_only_for_cuda
    from trtllm_runtime import EngineFormatError

    real_optimize = build_module.optimize  # a CPU engine whose weights went through the CUDA pass
    monkeypatch.setattr(build_module, "optimize",
                        lambda graph, **kw: relayout_weight_only_for_cuda(real_optimize(graph, **kw)))
    engine = build_quantized(tiny_llama, tmp_path, SCHEMES["int8_wo"])
    with pytest.raises((ValueError, EngineFormatError), match="'cuda_mma_tiles_v1' is not runnable on the CPU"):
        ModelRunner.from_dir(engine)


# --------------------------------------------------------------------------- --quantize-lm-head

LM_HEAD_SCHEMES = ("fp8", "int8_sq", "int8_wo", "int4_awq")
# As BOUNDS, on the tied model, lm_head quantized, as measured (fp8 0.216, int8_sq 0.131, int8_wo 0.032,
# int4_awq g16 0.398; with lm_head unquantized 0.225, 0.133, 0.033, 0.376) plus about 30%.
TIED_LM_HEAD_BOUNDS = {"fp8": 0.28, "int8_sq": 0.17, "int8_wo": 0.042, "int4_awq": 0.52}


@pytest.fixture(scope="module")
def tiny_tied_llama(tmp_path_factory):
    """Tied embeddings and a vocab of 130: the quantized lm_head is a copy of the embedding table,
    padded to 192 rows (64 per rank)."""
    import tiny_hf

    return tiny_hf.save_trained_scale_llama(tmp_path_factory.mktemp("tiny_tied"), family="llama_tied")


@pytest.fixture(scope="module")
def tied_float_logits(tiny_tied_llama, tmp_path_factory):
    return engine_logits(build_quantized(tiny_tied_llama, tmp_path_factory.mktemp("tied_float"), None))


def dequantized_lm_head(scheme: str, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lm_head as the GEMM multiplies it, the per-element rounding bound of its quantizer), float64,
    both in the domain of the stored weight (the original divided by pre_quant_scale)."""
    import ml_dtypes

    q, scale = w["lm_head.weight"], w["lm_head.weight_scale"].astype(np.float64)
    if scheme == "fp8":  # e4m3: 3 mantissa bits, a relative half-ulp of 2^-4; subnormals step 2^-9
        deq = q.view(ml_dtypes.float8_e4m3fn).astype(np.float64) * scale[0]
        return deq, np.maximum(np.abs(deq) * 2.0**-4, 2.0**-10 * scale[0])
    if scheme == "int8_sq":
        return q.astype(np.float64) * scale[:, None], np.broadcast_to(scale[:, None] / 2, q.shape)
    bits = 4 if scheme == "int4_awq" else 8
    codes = q.astype(np.int8) if bits == 8 else np.stack([(q << 4).astype(np.int8) >> 4, q.astype(np.int8) >> 4],
                                                         axis=2).reshape(q.shape[0], -1)
    per = np.repeat(scale, codes.shape[1] // scale.shape[1], axis=1)
    return codes.astype(np.float64) * per, per / 2


@pytest.mark.parametrize("scheme", LM_HEAD_SCHEMES)
def test_quantized_lm_head_is_the_rounded_tied_embedding_and_the_engine_runs_its_math(
        tiny_tied_llama, tied_float_logits, tmp_path, scheme):
    options = dataclasses.replace(SCHEMES[scheme], quantize_lm_head=True)
    engine = build_quantized(tiny_tied_llama, tmp_path, options)
    config, weights = load_checkpoint(tmp_path / "ckpt")
    assert config.quantization.quantize_lm_head and config.vocab_size_padded == 192
    # The checkpoint: the HF embedding (float64), divided by pre_quant_scale, rounded by the scheme's
    # quantizer to within half a step; padding rows are zero.
    embed = transformers.AutoModelForCausalLM.from_pretrained(tiny_tied_llama).get_input_embeddings().weight
    target = np.zeros((192, config.hidden_size))
    target[:130] = embed.detach().double().numpy()
    if "lm_head.pre_quant_scale" in weights:
        target /= weights["lm_head.pre_quant_scale"].astype(np.float64)[None, :]
    deq, bound = dequantized_lm_head(scheme, weights)
    assert np.all(np.abs(deq - target) <= bound * (1 + 1e-6) + 1e-12)
    assert not deq[130:].any() and np.abs(deq[:130] - target[:130]).max() > 0
    # The engine: the quantized graph's math (the float64 reference interpreter), lm_head included.
    graph = optimize(trace(config, weights), max_num_tokens=64, max_output_rows=64)
    assert graph.nodes[-1].op == ("weight_only_linear" if scheme in ("int8_wo", "int4_awq") else
                                  f"{scheme[:4]}_linear")
    ours = engine_logits(engine)
    reference = run_graphs([graph], np.array(PROMPT), output_rows=list(range(len(PROMPT))))["logits"]
    assert ours.shape == tied_float_logits.shape == (len(PROMPT), 130)  # the runtime drops the padding
    scale = np.max(np.abs(tied_float_logits))
    assert np.max(np.abs(ours - reference[:, :130])) / scale < 2e-3
    assert 0 < np.max(np.abs(ours - tied_float_logits)) / scale < TIED_LM_HEAD_BOUNDS[scheme]


@pytest.mark.parametrize("scheme", ["int8_sq", "int4_awq"])
def test_tensor_parallel_quantized_lm_head_matches_tp1(tiny_tied_llama, tmp_path, scheme):
    options = dataclasses.replace(SCHEMES[scheme], calib_size=4, calib_seq_len=64, quantize_lm_head=True)
    logits = []
    for tp in (1, 2):
        config = convert(tiny_tied_llama, tmp_path / f"tp{tp}", "float32", tp, options)
        assert config.vocab_size_padded == 64 * tp * -(-130 // (64 * tp))
        graphs = [optimize(trace(*load_checkpoint(tmp_path / f"tp{tp}", r)), max_num_tokens=64, max_output_rows=64)
                  for r in range(tp)]
        logits.append(run_graphs(graphs, np.array(PROMPT))["logits"][:, :130])
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-6, atol=1e-6 * np.abs(logits[0]).max())


def test_convert_cli_quantize_lm_head(tiny_llama, tmp_path, capsys):
    from trtllm_build.cli.build import main as build_main
    from trtllm_build.cli.convert import main as convert_main

    args = ["--model-dir", str(tiny_llama), "--output-dir", str(tmp_path / "ckpt"), "--dtype", "float32"]
    assert convert_main(args + ["--quantize-lm-head"]) == 2
    assert "--quantize-lm-head needs --quant" in capsys.readouterr().err
    assert convert_main(args + ["--quant", "int8_wo", "--quantize-lm-head"]) == 0
    assert build_main(["--checkpoint-dir", str(tmp_path / "ckpt"), "--output-dir", str(tmp_path / "engine"),
                       "--target", "cpu", "--max-num-tokens", "64"]) == 0
    capsys.readouterr()
    assert build_main(["--inspect", str(tmp_path / "engine")]) == 0
    out = capsys.readouterr().out
    assert "quantization: W8A16; weight_only_linear x9; weight layouts: row_major x9" in out
    assert "unquantized linears: none" in out


def test_checkpoint_with_a_quantized_lm_head_not_padded_to_64_rows_is_refused(tiny_tied_llama, tmp_path):
    options = dataclasses.replace(SCHEMES["int8_wo"], quantize_lm_head=True)
    convert(tiny_tied_llama, tmp_path / "ckpt", "float32", 1, options)
    path = tmp_path / "ckpt" / "config.json"
    config = json.loads(path.read_text())
    assert config["vocab_size_padded"] == 192
    path.write_text(json.dumps({**config, "vocab_size_padded": 130}))
    with pytest.raises(ConfigError, match="vocab_size_padded 130 must be at least vocab_size 130 and a multiple of 64"):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("scheme", ["int4_awq", "int8_sq"])
def test_threaded_quantization_writes_the_checkpoint_of_one_thread(tiny_llama, tmp_path, monkeypatch, scheme):
    """The converter quantizes linear groups on several threads; the checkpoint must be the bytes
    one thread writes (no state shared between groups, e.g. a random generator)."""
    import trtllm_build.convert as convert_module

    options = QuantOptions(scheme, calib_size=4, calib_seq_len=64, calibrator="builtin", quantize_lm_head=True)
    files = {}
    for threads in (1, 4):
        monkeypatch.setattr(convert_module, "_quantize_threads", lambda layout, groups, n=threads: n)
        out = tmp_path / f"threads{threads}"
        convert(tiny_llama, out, "bfloat16", 2, options)
        files[threads] = {p.name: p.read_bytes() for p in sorted(out.glob("rank*.safetensors"))}
    assert len(files[1]) == 2 and files[4] == files[1]
