"""The graph IR: typed values with symbolic dims, nodes in topological order, weights by name.

A value's shape mixes ints and symbolic dims (strings). The runtime binds the symbols each
iteration: `num_tokens` (all tokens of the packed batch) and `num_output_rows` (the tokens whose
logits it wants: each request's last token, or all of a request's tokens for context logits);
the memory plan sizes them at `max_num_tokens` / `max_output_rows`.

Nodes refer to values and weights by name, so a pass can rewrite the node list without
touching tensors, and the op list serializes to JSON as is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

NUM_TOKENS = "num_tokens"
NUM_OUTPUT_ROWS = "num_output_rows"
SYMBOLIC_DIMS = (NUM_TOKENS, NUM_OUTPUT_ROWS)

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str

    def nbytes(self, dims: dict[str, int]) -> int:
        count = 1
        for d in self.shape:
            count *= dims[d] if isinstance(d, str) else d
        return count * np.dtype(dtype_to_numpy(self.dtype)).itemsize


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)   # role ("weight", "bias", ...) -> weight name

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "attrs": dict(self.attrs), "weights": dict(self.weights)}


@dataclass
class Graph:
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    values: dict[str, TensorType]
    weights: dict[str, np.ndarray]
    # Facts the passes need (tp_size, ...) and what they did (fusion counts), kept in the engine.
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "Graph":
        """A copy a pass may edit freely; only the weight arrays are shared (never edited in place)."""
        nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs),
                                     attrs=dict(n.attrs), weights=dict(n.weights)) for n in self.nodes]
        return dataclasses.replace(self, inputs=list(self.inputs), outputs=list(self.outputs),
                                   nodes=nodes, values=dict(self.values),
                                   weights=dict(self.weights),
                                   meta={**self.meta, "passes": dict(self.meta.get("passes", {}))})

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {name: [] for name in self.values}
        for node in self.nodes:
            for name in node.inputs:
                users[name].append(node)
        return users

    def sole_reader(self, value: str, node: Node) -> bool:
        """Whether `node` reads `value` exactly once, no other node reads it and it is no graph
        output: a pass may then fold the value's producer into `node` and drop the value."""
        if value in self.outputs:
            return False
        readers = [n for n in self.nodes for name in n.inputs if name == value]
        return len(readers) == 1 and readers[0] is node

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def record_pass(self, name: str, rewrites: int) -> None:
        self.meta.setdefault("passes", {})[name] = rewrites


def fresh_name(taken: Iterable[str], base: str) -> str:
    taken = set(taken)
    if base not in taken:
        return base
    i = 1
    while f"{base}.{i}" in taken:
        i += 1
    return f"{base}.{i}"


def replace_uses(nodes: list[Node], old: str, new: str) -> None:
    """Point every consumer of value `old` at `new` (nodes are edited in place)."""
    for node in nodes:
        if old in node.inputs:
            node.inputs = [new if name == old else name for name in node.inputs]


def dtype_to_numpy(dtype: str) -> Any:
    import ml_dtypes

    special = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn}
    return special.get(dtype, dtype)
