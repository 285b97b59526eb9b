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


