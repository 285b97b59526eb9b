"""Shared pytest setup: markers, and skipping GPU tests where no CUDA device is usable."""

from __future__ import annotations

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
