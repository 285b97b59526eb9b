"""trtllm_build.safetensors_io: numpy-only safetensors, interoperable with the library."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from trtllm_build.safetensors_io import SafetensorsError, read_metadata, read_safetensors, write_safetensors


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    return {"f32": x, "f16": x.astype(np.float16), "bf16": x.astype(ml_dtypes.bfloat16),
            "i8": np.arange(-3, 4, dtype=np.int8), "i64": np.arange(7, dtype=np.int64),
            "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32)}


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path) -> None:
    write_safetensors(tmp_path / "t.safetensors", _tensors(), metadata={"format": "np"})
    back = read_safetensors(tmp_path / "t.safetensors")
    assert sorted(back) == sorted(_tensors())
    for name, ref in _tensors().items():
        assert back[name].dtype == ref.dtype and back[name].shape == ref.shape
        np.testing.assert_array_equal(back[name], ref)
    assert read_metadata(tmp_path / "t.safetensors") == {"format": "np"}


def test_tensors_are_aligned_to_their_item_size(tmp_path) -> None:
    write_safetensors(tmp_path / "t.safetensors", _tensors())
    assert all(a.flags.aligned for a in read_safetensors(tmp_path / "t.safetensors").values())


def test_library_reads_ours_and_we_read_the_librarys(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    ours = {k: v for k, v in _tensors().items() if k in ("f32", "f16", "bf16", "i64")}
    write_safetensors(tmp_path / "ours.safetensors", ours)
    loaded = st_torch.load_file(tmp_path / "ours.safetensors")
    assert loaded["bf16"].dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded["bf16"].view(torch.int16).numpy(), ours["bf16"].view(np.int16))
    st_torch.save_file(loaded, tmp_path / "theirs.safetensors")
    theirs = read_safetensors(tmp_path / "theirs.safetensors")
    for name, ref in ours.items():
        assert theirs[name].dtype == ref.dtype
        np.testing.assert_array_equal(theirs[name], ref)


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    write_safetensors(tmp_path / "t.safetensors", {"x": np.ones((64, 64), np.float32)})
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-100])
    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(tmp_path / "t.safetensors")
    (tmp_path / "t.safetensors").write_bytes(b"\x01")
    with pytest.raises(SafetensorsError, match="too short"):
        read_safetensors(tmp_path / "t.safetensors")
