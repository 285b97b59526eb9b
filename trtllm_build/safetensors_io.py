"""Read and write safetensors files with numpy alone (bf16 and fp8 through ml_dtypes).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
then the tensor bytes, back to back, offsets relative to the end of the header. We parse it
ourselves so that bf16 works whatever the installed safetensors/numpy versions support, and
reads are lazy (np.memmap): a tensor is paged in only when used.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
# A header larger than this is a corrupt or hostile file, not a model.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message names the file and the problem."""


def read_header(path: Path) -> tuple[dict, int]:
    """Return (header dict, byte offset where tensor data starts)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} is implausible; not a safetensors file?")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    return header, 8 + n


def read_safetensors(path: Path | str) -> dict[str, np.ndarray]:
    """All tensors of a file as read-only arrays backed by a memory map (no copy)."""
    path = Path(path)
    header, data_start = read_header(path)
    header.pop("__metadata__", None)
    size = path.stat().st_size
    if size == data_start:  # a file with no tensor bytes cannot be memory-mapped
        buf = np.zeros(0, np.uint8)
    else:
        buf = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end > buf.size or end - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise SafetensorsError(f"{path}: tensor {name!r} offsets {start}..{end} do not match "
                                   f"shape {shape} {info['dtype']} or the file size (truncated?)")
        out[name] = buf[start:end].view(dtype).reshape(shape)
    return out


def read_metadata(path: Path | str) -> dict[str, str]:
    header, _ = read_header(Path(path))
    return dict(header.get("__metadata__") or {})


def write_safetensors(path: Path | str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors; readable by the safetensors library and by `read_safetensors`."""
    # Widest dtypes first, so every tensor lands aligned to its item size (the header is
    # padded to 8 bytes): memory-mapped readers then get aligned arrays.
    names = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in names:
        arr = tensors[name]
        if arr.dtype not in _NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    # Write beside and rename: readers may hold the old file memory-mapped (truncating it under
    # them would crash them with SIGBUS), and a failed write leaves the old file intact.
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for name in names:
                f.write(np.ascontiguousarray(tensors[name]).tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
