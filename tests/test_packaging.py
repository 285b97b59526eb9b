"""The installed package: the C++ core imports and reports its CUDA state."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trtllm_runtime import _core


def test_core_extension_imports() -> None:
    assert _core.engine_format_version == 1


def test_cuda_available_returns_a_bool() -> None:
    assert isinstance(_core.cuda_available(), bool)


def test_engine_format_error_is_a_value_error_exported_by_the_package() -> None:
    from trtllm_runtime import Engine, EngineFormatError

    assert issubclass(EngineFormatError, ValueError)
    assert Engine is not None


def test_sm_arch_query_raises_without_a_device() -> None:
    if _core.cuda_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(RuntimeError):
        _core.cuda_device_sm_arch()


def test_runtime_imports_neither_the_builder_nor_torch() -> None:
    code = (
        "import sys, trtllm_runtime; "
        "bad = [m for m in ('trtllm_build', 'torch') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
def test_cuda_device_reports_its_sm_arch() -> None:
    assert _core.built_with_cuda
    arch = _core.cuda_device_sm_arch(0)
    assert 70 <= arch < 200
    with pytest.raises(RuntimeError, match="does not exist"):
        _core.cuda_device_sm_arch(1_000)
