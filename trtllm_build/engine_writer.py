"""Writer of the engine file format v1 (docs/engine_format.md).

The file is streamed: the header is written as zeros, the metadata and each weight are appended
while a running CRC-32 is kept, and the header is patched at the end. Memory use stays at one
weight (usually none: contiguous arrays are written from their own buffers), whatever the
model size. The file appears under its final name only once complete (write to `.tmp`, fsync,
rename), so a reader never maps a half-written engine.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtllm_runtime.engine import ALIGNMENT, TARGETS, WEIGHT_DTYPES  # the reader's: one definition of the format

FORMAT_VERSION = 1
MAGIC = b"TLLMENG\0"
HEADER_SIZE = 64
# magic, format_version, reserved, metadata_size, data_offset, data_size, crc32, reserved[20]
_HEADER = struct.Struct("<8sIIQQQI20x")
assert _HEADER.size == HEADER_SIZE

_CHUNK_BYTES = 64 << 20  # bounds the size of each write and zlib.crc32 call


def write_engine(
    path: Path,
    *,
    target: str,
    sm_arch: int | None,
    opset_version: int,
    build_options: dict[str, Any],
    model_config: dict[str, Any],
    ops: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    memory_plan: dict[str, Any],
    tactics: dict[str, Any],
    weights: Mapping[str, np.ndarray],
) -> None:
    """Write an engine file of format v1 to `path`, replacing any existing file.

    Weights are laid out in the order of `weights`, each at a 64-byte aligned offset. Raises
    ValueError for an unknown target, a missing/extra sm_arch, tactics on a CPU engine or an
    unsupported weight dtype, and TypeError for metadata that is not JSON-serializable.
    """
    path = Path(path)
    _check_header_args(target, sm_arch, opset_version, tactics)
    for key, value, kind in (
        ("build_options", build_options, dict),
        ("model_config", model_config, dict),
        ("ops", ops, list),
        ("inputs", inputs, list),
        ("outputs", outputs, list),
        ("memory_plan", memory_plan, dict),
        ("tactics", tactics, dict),
    ):
        if not isinstance(value, kind):
            raise TypeError(f"{key} must be a {kind.__name__}, got {type(value).__name__}")

    entries: dict[str, dict[str, Any]] = {}
    data_size = 0
    for name, array in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"weight names must be non-empty strings, got {name!r}")
        data_size = _align(data_size)
        entries[name] = {
            "dtype": _dtype_name(name, array),
            "shape": [int(d) for d in array.shape],
            "offset": data_size,
            "nbytes": int(array.nbytes),
        }
        data_size += int(array.nbytes)

    metadata = {
        "opset_version": opset_version,
        "target": target,
        "sm_arch": sm_arch,
        "build_options": build_options,
        "model_config": model_config,
        "ops": ops,
        "inputs": inputs,
        "outputs": outputs,
        "memory_plan": memory_plan,
        "tactics": tactics,
        "weights": entries,
    }
    try:
        metadata_json = json.dumps(
            metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"engine metadata must be strict JSON: {e}") from e
    data_offset = _align(HEADER_SIZE + len(metadata_json))

    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(HEADER_SIZE))  # patched below, once the CRC is known
            crc = 0

            def put(chunk: bytes | np.ndarray) -> None:
                nonlocal crc
                crc = zlib.crc32(chunk, crc)
                f.write(chunk)

            put(metadata_json)
            put(bytes(data_offset - HEADER_SIZE - len(metadata_json)))
            position = 0
            for name, array in weights.items():
                entry = entries[name]
                put(bytes(entry["offset"] - position))
                for chunk in _byte_chunks(array):
                    put(chunk)
                position = entry["offset"] + entry["nbytes"]

            f.seek(0)
            f.write(
                _HEADER.pack(
                    MAGIC, FORMAT_VERSION, 0, len(metadata_json), data_offset, data_size, crc
                )
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_header_args(
    target: str, sm_arch: int | None, opset_version: int, tactics: dict[str, Any]
) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "cuda":
        if not _is_int(sm_arch) or sm_arch <= 0:
            raise ValueError(
                f"sm_arch must be a positive int for target 'cuda' (e.g. 90), got {sm_arch!r}"
            )
    else:
        if sm_arch is not None:
            raise ValueError(f"sm_arch must be None for target {target!r}, got {sm_arch!r}")
        if tactics:
            raise ValueError(f"tactics must be empty for target {target!r}")
    if not _is_int(opset_version) or opset_version < 0:
        raise ValueError(f"opset_version must be a non-negative int, got {opset_version!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dtype_name(name: str, array: np.ndarray) -> str:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"weight {name!r} must be a numpy array, got {type(array).__name__}")
    dtype_name = array.dtype.name  # byte order is not part of the name: '>f4' is 'float32'
    if dtype_name not in WEIGHT_DTYPES:
        raise ValueError(
            f"weight {name!r} has dtype {array.dtype}, supported: {', '.join(WEIGHT_DTYPES)}"
        )
    return dtype_name


def _byte_chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    """The array's little-endian, C-order bytes as uint8 views, copying only when it must
    (a non-contiguous or big-endian array)."""
    stored = np.ascontiguousarray(array, dtype=WEIGHT_DTYPES[array.dtype.name])
    flat = stored.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, _CHUNK_BYTES):
        yield flat[start : start + _CHUNK_BYTES]


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
