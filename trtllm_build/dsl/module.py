"""Module: a tree of layers whose Parameters are named by their attribute path (as in torch)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..graph.ir import dtype_to_numpy
from .tensor import Parameter


class WeightError(ValueError):
    """A checkpoint tensor is missing, unexpected or of the wrong shape; the message names it."""


class Module:
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for key, child in vars(self).items():
            children = child if isinstance(child, list) else [child]
            for i, item in enumerate(children):
                if isinstance(item, Module):
                    name = f"{key}.{i}" if isinstance(child, list) else key
                    yield from item.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for prefix, module in self.named_modules():
            for key, value in vars(module).items():
                if isinstance(value, Parameter):
                    yield (f"{prefix}.{key}" if prefix else key), value

    def load_weights(self, weights: dict[str, np.ndarray], aliases: dict[str, str] | None = None) -> None:
        """Bind checkpoint tensors to Parameters by name; `aliases` maps a parameter to another tensor
        (tied embeddings). Every parameter must be found with its exact shape; nothing may be left over."""
        aliases = aliases or {}
        used = set()
        for name, param in self.named_parameters():
            source = aliases.get(name, name)
            if source not in weights:
                raise WeightError(f"checkpoint tensor {source!r} is missing")
            value = weights[source]
            if tuple(value.shape) != param.shape:
                raise WeightError(f"checkpoint tensor {source!r} has shape {tuple(value.shape)}, "
                                  f"the model expects {param.shape}")
            expected = np.dtype(dtype_to_numpy(param.dtype))
            if value.dtype != expected:
                raise WeightError(f"checkpoint tensor {source!r} has dtype {value.dtype}, expected {expected}")
            param.name, param.value = source, value
            used.add(source)
        unexpected = sorted(set(weights) - used)
        if unexpected:
            raise WeightError(f"checkpoint has tensors the model does not use: {unexpected[:5]}")
