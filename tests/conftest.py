"""Shared pytest setup: markers, and skipping GPU tests where no CUDA device is usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _cuda_available() -> tuple[bool, str]:
    try:
        from trtllm_runtime import _core
    except ImportError as e:  # test_packaging reports the broken build itself
        return False, f"trtllm_runtime._core does not import: {e}"
    if not _core.cuda_available():
        return False, "no CUDA device (or trtllm_runtime built without CUDA)"
    return True, ""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    available, reason = _cuda_available()
    if available:
        return
    skip_gpu = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """family -> (HF model dir, float32 state dict), each built once with a fixed seed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import tiny_hf

    out = {}
    for family in tiny_hf.FAMILIES:
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(tiny_hf.hf_config(family))
        with torch.no_grad():  # HF inits biases and norms to constants; make every tensor distinct
            for p in model.parameters():
                p.normal_(0, 0.5)
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (path, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    return out




def build_engine(model_dir: Path, out_dir: Path, dtype: str = "float32", tp_size: int = 1, **build: object) -> Path:
    """HF dir -> checkpoint -> CPU engine dir (shared by the runtime tests)."""
    from trtllm_build.build import BuildConfig, build as build_engine_dir
    from trtllm_build.convert import convert

    convert(model_dir, out_dir / "ckpt", dtype, tp_size)
    config = BuildConfig(**{"max_batch_size": 16, "max_num_tokens": 256, "target": "cpu", **build})
    return build_engine_dir(out_dir / "ckpt", out_dir / "engine", config)


@pytest.fixture(scope="session")
def tiny_engines(hf_models, tmp_path_factory) -> dict[str, Path]:
    """family -> float32 CPU engine dir built with context logits, one per family."""
    return {family: build_engine(path, tmp_path_factory.mktemp(f"engine_{family}"), gather_context_logits=True)
            for family, (path, _) in hf_models.items()}


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from trtllm_build.default_model import DefaultModelError, default_model_path

    try:
        return default_model_path()
    except DefaultModelError as e:
        pytest.skip(f"the default model (SmolLM2 GGUF) cannot be fetched: {e}")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf, tmp_path_factory):
    """(float32 checkpoint dir, its ModelConfig, transformers' model loaded from the same GGUF)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from trtllm_build.convert import convert

    ckpt = tmp_path_factory.mktemp("smollm2") / "ckpt"
    config = convert(smollm2_gguf, ckpt, "float32", 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    return ckpt, config, model.eval()


@pytest.fixture(scope="session")
def tiny_text_engine(tiny_engines, tmp_path_factory) -> Path:
    """The tiny llama3 engine plus a tiny word-level tokenizer and chat template (for the text APIs)."""
    import tiny_tokenizer

    return tiny_tokenizer.add_tokenizer(tiny_engines["llama3"], tmp_path_factory.mktemp("text_engine") / "engine")
