"""Opening an engine file (format v1, docs/engine_format.md).

The C++ core maps the file and checks the header, sizes and CRC-32; this module parses the
metadata JSON, checks its schema and the target, and exposes the weights as read-only numpy
views over the mapping (no copy: a multi-GB engine costs page cache, not heap).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from trtllm_runtime._core import EngineFile, EngineFormatError

TARGETS = ("cpu", "cuda")
ALIGNMENT = 64

# Format dtype name -> numpy dtype (little-endian, as stored).
WEIGHT_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int32": np.dtype("<i4"),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
}

# Top-level metadata keys and their JSON types; unknown keys are ignored.
_METADATA_KEYS: dict[str, tuple[type, ...]] = {
    "opset_version": (int,),
    "target": (str,),
    "sm_arch": (int, type(None)),
    "build_options": (dict,),
    "model_config": (dict,),
    "ops": (list,),
    "inputs": (list,),
    "outputs": (list,),
    "memory_plan": (dict,),
    "tactics": (dict,),
    "weights": (dict,),
}


@dataclass(frozen=True)
class Engine:
    """A loaded engine: its metadata and zero-copy weight views. Keep the object (or any of
    its weight arrays) alive as long as the weights are used: they point into the mapping."""

    path: Path
    format_version: int
    opset_version: int
    target: str
    sm_arch: int | None
    build_options: dict[str, Any]
    model_config: dict[str, Any]
    ops: list[Any]
    inputs: list[Any]
    outputs: list[Any]
    memory_plan: dict[str, Any]
    tactics: dict[str, Any]
    weights: dict[str, np.ndarray]
    file: EngineFile = field(repr=False, compare=False)

    @classmethod
    def open(
        cls,
        path: str | Path,
        expected_target: str | None = None,
        sm_arch: int | None = None,
        *,
        verify_checksum: bool = True,
    ) -> Engine:
        """Map and validate an engine file.

        expected_target: the backend that will run it ("cpu" or "cuda"); None accepts either.
        sm_arch: the SM arch of the device that will run it (e.g. 90); checked against a CUDA
        engine's recorded arch, ignored for a CPU engine.
        Raises EngineFormatError (a ValueError) for a file that is not a valid v1 engine or was
        built for another target or SM arch, and OSError (e.g. FileNotFoundError) when the file
        cannot be read.
        """
        if expected_target is not None and expected_target not in TARGETS:
            raise ValueError(
                f"expected_target must be one of {', '.join(TARGETS)} or None, "
                f"got {expected_target!r}"
            )
        path = Path(path)
        engine_file = EngineFile(str(path), verify_checksum)
        meta = _parse_metadata(path, engine_file.metadata_json)

        target, file_arch = meta["target"], meta["sm_arch"]
        if expected_target is not None and target != expected_target:
            raise EngineFormatError(
                f"{path}: engine was built for target {target!r}, but this runtime runs "
                f"{expected_target!r}; rebuild the engine for {expected_target!r}"
            )
        if sm_arch is not None and file_arch is not None and file_arch != sm_arch:
            raise EngineFormatError(
                f"{path}: engine was built for sm_{file_arch}, but the device is sm_{sm_arch}; "
                f"rebuild the engine on (or for) this GPU"
            )

        return cls(
            path=path,
            format_version=engine_file.format_version,
            opset_version=meta["opset_version"],
            target=target,
            sm_arch=file_arch,
            build_options=meta["build_options"],
            model_config=meta["model_config"],
            ops=meta["ops"],
            inputs=meta["inputs"],
            outputs=meta["outputs"],
            memory_plan=meta["memory_plan"],
            tactics=meta["tactics"],
            weights=_weight_views(path, engine_file, meta["weights"]),
            file=engine_file,
        )


def _parse_metadata(path: Path, text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise EngineFormatError(f"{path}: engine metadata is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise EngineFormatError(
            f"{path}: engine metadata must be a JSON object, got {type(meta).__name__}"
        )
    for key, types in _METADATA_KEYS.items():
        if key not in meta:
            raise EngineFormatError(f"{path}: engine metadata has no {key!r}")
        value = meta[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise EngineFormatError(
                f"{path}: engine metadata {key!r} must be "
                f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}, "
                f"got {value!r:.80}"
            )
    if meta["target"] not in TARGETS:
        raise EngineFormatError(
            f"{path}: engine target {meta['target']!r} is not one of {', '.join(TARGETS)}"
        )
    if meta["target"] == "cuda" and meta["sm_arch"] is None:
        raise EngineFormatError(f"{path}: a 'cuda' engine must record its sm_arch")
    return meta


def _weight_views(
    path: Path, engine_file: EngineFile, entries: dict[str, Any]
) -> dict[str, np.ndarray]:
    blob = memoryview(engine_file)  # read-only; holds a reference to the mapping
    weights: dict[str, np.ndarray] = {}
    for name, entry in entries.items():
        try:
            dtype_name, shape = entry["dtype"], entry["shape"]
            offset, nbytes = entry["offset"], entry["nbytes"]
        except (KeyError, TypeError) as e:
            raise EngineFormatError(
                f"{path}: malformed entry for weight {name!r}: {entry!r:.200}"
            ) from e
        dtype = WEIGHT_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise EngineFormatError(
                f"{path}: weight {name!r} has unknown dtype {dtype_name!r}; "
                f"supported: {', '.join(WEIGHT_DTYPES)}"
            )
        if not (
            isinstance(shape, list)
            and all(_is_int(d) and d >= 0 for d in shape)
            and _is_int(offset)
            and _is_int(nbytes)
        ):
            raise EngineFormatError(f"{path}: malformed entry for weight {name!r}: {entry!r:.200}")
        count = math.prod(shape)
        if nbytes != count * dtype.itemsize:
            raise EngineFormatError(
                f"{path}: weight {name!r}: nbytes {nbytes} does not match "
                f"{dtype_name}{shape} ({count * dtype.itemsize} bytes)"
            )
        if offset < 0 or offset % ALIGNMENT or offset + nbytes > len(blob):
            raise EngineFormatError(
                f"{path}: weight {name!r} at offset {offset} with {nbytes} bytes lies outside "
                f"the {len(blob)}-byte data blob or is not {ALIGNMENT}-byte aligned"
            )
        weights[name] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
    return weights


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
