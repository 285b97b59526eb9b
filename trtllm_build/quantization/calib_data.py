"""Calibration text: a file given by the user, or the built-in default (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError

# The built-in text is the standard library's pydoc topics (Python's reference manual), every
# topic from this one on in sorted order; the perplexity slice the README measures (the first six
# topics) is kept out of it.
BUILTIN_FIRST_TOPIC = 6


def builtin_calibration_text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics)[BUILTIN_FIRST_TOPIC:])


def builtin_eval_text() -> str:
    """The perplexity text of the README's measurements: the first six topics."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics)[:BUILTIN_FIRST_TOPIC])


def read_calibration_text(path: Path | None) -> str:
    """A .jsonl file (one JSON object with a "text" string per line) or any other file as plain text."""
    if path is None:
        return builtin_calibration_text()
    path = Path(path)
    if path.suffix != ".jsonl":
        return path.read_text()
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{number}: not a JSON line: {e}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ConfigError(f"{path}:{number}: expected an object with a \"text\" string")
        texts.append(record["text"])
    if not texts:
        raise ConfigError(f"{path} holds no calibration text")
    return "\n".join(texts)
