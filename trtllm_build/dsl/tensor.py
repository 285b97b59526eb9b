"""Tensors and the tracer: running a DSL model records nodes into a Graph instead of computing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..graph.ir import Graph, Node, TensorType, fresh_name


@dataclass(frozen=True)
class Tensor:
    """A symbolic activation: a named value of the graph being traced."""

    tracer: "Tracer"
    name: str
    type: TensorType

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype


class Parameter:
    """A weight slot: shape and dtype fixed by the layer, name given by its place in the module tree."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.name: str | None = None
        self.value: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Parameter({self.name}, {self.shape}, {self.dtype})"


class Tracer:
    """Collects the nodes, values and weights of one traced forward pass."""

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self.graph = Graph(inputs=[], outputs=[], nodes=[], values={}, weights={}, meta=dict(meta or {}))

    def input(self, name: str, shape: tuple, dtype: str) -> Tensor:
        self.graph.values[name] = TensorType(tuple(shape), dtype)
        self.graph.inputs.append(name)
        return Tensor(self, name, self.graph.values[name])

    def mark_output(self, tensor: Tensor, name: str) -> None:
        if tensor.name != name:
            # Outputs keep stable names for the runtime: rename the producing node's output.
            node = self.graph.nodes[-1]
            assert node.outputs == [tensor.name], "only the last node's output can be renamed"
            self.graph.values[name] = self.graph.values.pop(tensor.name)
            node.outputs = [name]
        self.graph.outputs.append(name)

    def op(self, op: str, inputs: list[Tensor], out_types: list[TensorType], *,
           attrs: dict[str, Any] | None = None, weights: dict[str, Parameter | None] | None = None,
           hint: str | None = None) -> list[Tensor]:
        bound: dict[str, str] = {}
        for role, param in (weights or {}).items():
            if param is None:
                continue
            if param.name is None or param.value is None:
                raise ValueError(f"parameter {param} is not named or has no value: call load_weights first")
            self.graph.weights[param.name] = param.value
            bound[role] = param.name
        base = hint or op
        outputs = []
        for t in out_types:
            name = fresh_name(self.graph.values, base)
            self.graph.values[name] = t
            outputs.append(name)
        self.graph.nodes.append(Node(op, [x.name for x in inputs], outputs, dict(attrs or {}), bound))
        return [Tensor(self, name, self.graph.values[name]) for name in outputs]
