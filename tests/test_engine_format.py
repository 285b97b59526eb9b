"""Engine file format v1 (docs/engine_format.md): the builder's writer and the runtime's reader.

The layout checks parse the file with `struct` and `zlib` directly, independently of both.
"""

from __future__ import annotations

import gc
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trtllm_build.engine_writer import write_engine
from trtllm_runtime import Engine, EngineFormatError
from trtllm_runtime import _core

HEADER = struct.Struct("<8sIIQQQI20s")


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random bit patterns (NaNs included) of every dtype, odd sizes, edge shapes."""
    rng = np.random.default_rng(seed)

    def bits(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
        return raw.view(dtype).reshape(shape)

    return {
        "embed.weight": bits(np.float32, (7, 5)),
        "layers.0.norm": bits(np.float16, (13,)),
        "layers.0.qkv": bits(ml_dtypes.bfloat16, (3, 11)),  # 66 bytes: forces padding
        "layers.0.q_int8": bits(np.int8, (17,)),
        "layers.0.packed_int4": bits(np.uint8, (4, 9)),
        "layers.0.ids": bits(np.int32, (2, 3)),
        "layers.0.fp8": bits(ml_dtypes.float8_e4m3fn, (5, 3)),
        "scale": bits(np.float32, ()),
        "empty": bits(np.float16, (0, 4)),
        "transposed": bits(np.float32, (6, 4)).T,  # non-contiguous input
        "big_endian": np.arange(5, dtype=">i4"),
    }


def engine_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        target="cpu",
        sm_arch=None,
        opset_version=3,
        build_options={"max_batch_size": 8, "max_num_tokens": 256, "dtype": "bfloat16"},
        model_config={"architecture": "LlamaForCausalLM", "hidden_size": 64, "name": "tést"},
        ops=[{"op": "embedding", "inputs": ["input_ids"], "outputs": ["h0"]}],
        inputs=[{"name": "input_ids", "dtype": "int32", "shape": ["num_tokens"]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["num_tokens", 100]}],
        memory_plan={"arena_bytes": 4096, "offsets": {"h0": 0}},
        tactics={},
        weights=random_weights(),
    )
    args.update(overrides)
    return args


@pytest.fixture
def engine_path(tmp_path: Path) -> Path:
    path = tmp_path / "rank0.engine"
    write_engine(path, **engine_args())
    return path


def read_header(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    magic, version, reserved0, meta_size, data_offset, data_size, crc, reserved1 = (
        HEADER.unpack_from(raw)
    )
    return dict(
        raw=raw, magic=magic, version=version, reserved0=reserved0, meta_size=meta_size,
        data_offset=data_offset, data_size=data_size, crc=crc, reserved1=reserved1,
    )


def rebuild(path: Path, edit_metadata: Any) -> None:
    """Rewrite a valid engine with edited metadata, keeping the layout and the CRC valid,
    to reach the reader's metadata checks past the header checks."""
    h = read_header(path)
    raw = h["raw"]
    meta = edit_metadata(raw[64 : 64 + h["meta_size"]])
    blob = raw[h["data_offset"] :]
    data_offset = (64 + len(meta) + 63) // 64 * 64
    body = meta + bytes(data_offset - 64 - len(meta)) + blob
    header = HEADER.pack(
        b"TLLMENG\0", 1, 0, len(meta), data_offset, len(blob), zlib.crc32(body), bytes(20)
    )
    path.write_bytes(header + body)


def edit_json(fn: Any) -> Any:
    def edit(meta: bytes) -> bytes:
        obj = json.loads(meta)
        fn(obj)
        return json.dumps(obj).encode()

    return edit


def patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


# --- the layout on disk --------------------------------------------------------------------


def test_header_layout_matches_the_spec(engine_path: Path) -> None:
    h = read_header(engine_path)
    raw = h["raw"]
    assert h["magic"] == b"TLLMENG\0"
    assert h["version"] == 1
    assert h["reserved0"] == 0 and h["reserved1"] == bytes(20)
    assert h["data_offset"] % 64 == 0
    assert h["data_offset"] >= 64 + h["meta_size"]
    assert len(raw) == h["data_offset"] + h["data_size"]
    assert h["crc"] == zlib.crc32(raw[64:])
    assert raw[64 + h["meta_size"] : h["data_offset"]] == bytes(h["data_offset"] - 64 - h["meta_size"])
    meta = json.loads(raw[64 : 64 + h["meta_size"]].decode("utf-8"))
    assert set(meta) == {
        "opset_version", "target", "sm_arch", "build_options", "model_config", "ops",
        "inputs", "outputs", "memory_plan", "tactics", "weights",
    }


def test_weights_are_stored_64_byte_aligned_in_order_with_their_bytes(engine_path: Path) -> None:
    h = read_header(engine_path)
    entries = json.loads(h["raw"][64 : 64 + h["meta_size"]])["weights"]
    weights = random_weights()
    assert list(entries) == list(weights)
    end = 0
    for name, array in weights.items():
        entry = entries[name]
        assert entry["offset"] % 64 == 0 and entry["offset"] >= end
        assert entry["shape"] == list(array.shape)
        assert entry["nbytes"] == array.nbytes
        start = h["data_offset"] + entry["offset"]
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        assert h["raw"][start : start + entry["nbytes"]] == little.tobytes()
        end = entry["offset"] + entry["nbytes"]
    assert entries["big_endian"]["dtype"] == "int32"
    assert entries["layers.0.qkv"]["dtype"] == "bfloat16"
    assert entries["layers.0.fp8"]["dtype"] == "float8_e4m3fn"


def test_crc32_of_the_core_matches_zlib() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=1 << 20, dtype=np.uint8)
    for start, stop in [(0, 0), (0, 1), (3, 10), (1, 4097), (5, 1 << 20), (0, 1 << 20)]:
        chunk = data[start:stop]
        assert _core.crc32(chunk) == zlib.crc32(chunk)
        assert _core.crc32(chunk, 0x12345678) == zlib.crc32(chunk, 0x12345678)


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_preserves_metadata(engine_path: Path) -> None:
    args = engine_args()
    engine = Engine.open(engine_path, expected_target="cpu")
    assert engine.format_version == 1
    assert engine.path == engine_path
    for key in ("opset_version", "target", "sm_arch", "build_options", "model_config", "ops",
                "inputs", "outputs", "memory_plan", "tactics"):
        assert getattr(engine, key) == args[key], key


def test_round_trip_weights_are_bit_identical(engine_path: Path) -> None:
    engine = Engine.open(engine_path)
    expected = random_weights()
    assert list(engine.weights) == list(expected)
    for name, array in expected.items():
        loaded = engine.weights[name]
        assert loaded.shape == array.shape, name
        assert loaded.dtype == array.dtype.newbyteorder("<") or loaded.dtype == array.dtype, name
        little = np.ascontiguousarray(array, dtype=loaded.dtype)
        assert loaded.tobytes() == little.tobytes(), name
    assert engine.weights["layers.0.qkv"].dtype == ml_dtypes.bfloat16
    assert engine.weights["layers.0.fp8"].dtype == ml_dtypes.float8_e4m3fn


def test_weights_are_read_only_views_of_the_mapping(engine_path: Path) -> None:
    engine = Engine.open(engine_path)
    blob = np.frombuffer(memoryview(engine.file), dtype=np.uint8)
    for name, array in engine.weights.items():
        assert not array.flags.writeable, name
        if array.size:
            assert np.shares_memory(array, blob), name
            assert array.__array_interface__["data"][0] % 64 == 0, name
        base = array
        while not isinstance(base, memoryview):
            base = base.base
        assert base.obj is engine.file and base.readonly, name


def test_weight_views_keep_the_mapping_alive(engine_path: Path) -> None:
    weights = Engine.open(engine_path).weights
    gc.collect()
    assert weights["layers.0.ids"].tobytes() == random_weights()["layers.0.ids"].tobytes()


def test_cuda_engine_records_target_and_sm_arch(tmp_path: Path) -> None:
    path = tmp_path / "cuda.engine"
    write_engine(path, **engine_args(target="cuda", sm_arch=90, tactics={"gemm.0": "cublaslt:7"}))
    engine = Engine.open(path, expected_target="cuda", sm_arch=90)
    assert (engine.target, engine.sm_arch, engine.tactics) == ("cuda", 90, {"gemm.0": "cublaslt:7"})


def test_engine_without_weights_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "empty.engine"
    write_engine(path, **engine_args(weights={}))
    engine = Engine.open(path)
    assert engine.weights == {} and engine.file.data_size == 0


def test_rewriting_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "rank0.engine"
    write_engine(path, **engine_args(opset_version=1))
    write_engine(path, **engine_args(opset_version=2))
    assert Engine.open(path).opset_version == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.engine"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtllm_build import engine_writer

    path = tmp_path / "rank0.engine"
    write_engine(path, **engine_args(opset_version=1))

    def explode(array: np.ndarray) -> Any:
        raise OSError("disk full")
        yield  # a generator, like the real one

    monkeypatch.setattr(engine_writer, "_byte_chunks", explode)
    with pytest.raises(OSError, match="disk full"):
        write_engine(path, **engine_args(opset_version=2))
    assert Engine.open(path).opset_version == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.engine"]


# --- writer argument errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(target="tpu"), "target must be one of cpu, cuda"),
        (dict(target="cuda", sm_arch=None), "sm_arch must be a positive int"),
        (dict(sm_arch=90), "sm_arch must be None for target 'cpu'"),
        (dict(tactics={"gemm": 1}), "tactics must be empty"),
        (dict(weights={"w": np.zeros(3, np.float64)}), "dtype float64"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path: Path, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_engine(tmp_path / "x.engine", **engine_args(**overrides))
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_metadata_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="strict JSON"):
        write_engine(tmp_path / "x.engine", **engine_args(model_config={"eps": np.float32(1)}))


# --- reader errors -------------------------------------------------------------------------


def test_error_type_is_a_value_error() -> None:
    assert issubclass(EngineFormatError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.engine"):
        Engine.open(tmp_path / "nope.engine")


def test_wrong_magic(engine_path: Path) -> None:
    patch(engine_path, 0, b"GGUF\3\0\0\0")
    with pytest.raises(EngineFormatError, match=r"not an engine file: magic bytes are 47 47 55 46"):
        Engine.open(engine_path)


def test_short_file_of_another_kind_is_not_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello")
    with pytest.raises(EngineFormatError, match="not an engine file"):
        Engine.open(path)


def test_other_format_version_names_both_versions(engine_path: Path) -> None:
    patch(engine_path, 8, struct.pack("<I", 2))
    with pytest.raises(EngineFormatError, match=r"version 2 is not supported.*reads version 1"):
        Engine.open(engine_path)


def test_nonzero_reserved_header_bytes(engine_path: Path) -> None:
    patch(engine_path, 50, b"\x01")
    with pytest.raises(EngineFormatError, match="reserved bytes"):
        Engine.open(engine_path)


@pytest.mark.parametrize("where", ["empty", "in_magic", "in_header", "header_only", "in_metadata",
                                   "at_data_offset", "in_blob", "last_byte"])
def test_truncated_file(engine_path: Path, where: str) -> None:
    h = read_header(engine_path)
    size = {
        "empty": 0,
        "in_magic": 5,
        "in_header": 40,
        "header_only": 64,
        "in_metadata": 64 + h["meta_size"] // 2,
        "at_data_offset": h["data_offset"],
        "in_blob": h["data_offset"] + h["data_size"] // 2,
        "last_byte": len(h["raw"]) - 1,
    }[where]
    engine_path.write_bytes(h["raw"][:size])
    if size < 64:
        match = rf"truncated: {size} bytes, shorter than the 64-byte header"
    else:
        match = rf"truncated: expected {len(h['raw'])} bytes .*got {size}"
    with pytest.raises(EngineFormatError, match=match):
        Engine.open(engine_path)


def test_trailing_bytes(engine_path: Path) -> None:
    with engine_path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineFormatError, match="size mismatch"):
        Engine.open(engine_path)


@pytest.mark.parametrize("region", ["metadata", "padding", "blob"])
def test_flipped_byte_fails_the_checksum(engine_path: Path, region: str) -> None:
    h = read_header(engine_path)
    offset = {
        "metadata": 64 + 3,
        "padding": h["data_offset"] - 1,
        "blob": h["data_offset"] + h["data_size"] // 2,
    }[region]
    patch(engine_path, offset, bytes([h["raw"][offset] ^ 0x10]))
    with pytest.raises(EngineFormatError, match="checksum mismatch"):
        Engine.open(engine_path)


def test_checksum_verification_can_be_skipped(engine_path: Path) -> None:
    h = read_header(engine_path)
    offset = h["data_offset"] + h["data_size"] - 1
    patch(engine_path, offset, bytes([h["raw"][offset] ^ 0xFF]))
    assert Engine.open(engine_path, verify_checksum=False).target == "cpu"


def test_other_target_names_both(engine_path: Path) -> None:
    with pytest.raises(EngineFormatError, match=r"built for target 'cpu'.*runs 'cuda'"):
        Engine.open(engine_path, expected_target="cuda")


def test_other_sm_arch_names_both(tmp_path: Path) -> None:
    path = tmp_path / "cuda.engine"
    write_engine(path, **engine_args(target="cuda", sm_arch=90))
    with pytest.raises(EngineFormatError, match=r"built for sm_90.*device is sm_80"):
        Engine.open(path, expected_target="cuda", sm_arch=80)


def test_malformed_metadata_json(engine_path: Path) -> None:
    rebuild(engine_path, lambda meta: meta[:-1])
    with pytest.raises(EngineFormatError, match="not valid JSON"):
        Engine.open(engine_path)


def test_metadata_that_is_not_utf8(engine_path: Path) -> None:
    rebuild(engine_path, lambda meta: meta.replace(b"t\xc3\xa9st", b"t\xe9st"))
    with pytest.raises(EngineFormatError, match="not valid UTF-8"):
        Engine.open(engine_path)


def test_missing_metadata_key(engine_path: Path) -> None:
    rebuild(engine_path, edit_json(lambda m: m.pop("memory_plan")))
    with pytest.raises(EngineFormatError, match="no 'memory_plan'"):
        Engine.open(engine_path)


def test_cuda_engine_without_sm_arch(engine_path: Path) -> None:
    rebuild(engine_path, edit_json(lambda m: m.update(target="cuda")))
    with pytest.raises(EngineFormatError, match="must record its sm_arch"):
        Engine.open(engine_path)


def test_weight_out_of_bounds(engine_path: Path) -> None:
    rebuild(engine_path, edit_json(lambda m: m["weights"]["embed.weight"].update(offset=1 << 40)))
    with pytest.raises(EngineFormatError, match="'embed.weight' at offset 1099511627776 .* outside"):
        Engine.open(engine_path)


def test_weight_nbytes_inconsistent_with_shape(engine_path: Path) -> None:
    rebuild(engine_path, edit_json(lambda m: m["weights"]["embed.weight"].update(shape=[7, 6])))
    with pytest.raises(EngineFormatError, match="nbytes 140 does not match"):
        Engine.open(engine_path)


def test_unknown_weight_dtype(engine_path: Path) -> None:
    rebuild(engine_path, edit_json(lambda m: m["weights"]["embed.weight"].update(dtype="float64")))
    with pytest.raises(EngineFormatError, match="'embed.weight' has unknown dtype 'float64'"):
        Engine.open(engine_path)
