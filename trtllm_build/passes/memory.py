"""Activation memory planning: every value gets an offset in one arena, reused when lifetimes end."""

from __future__ import annotations

from typing import Any

from ..graph.ir import NUM_OUTPUT_ROWS, NUM_TOKENS, Graph

ARENA_ALIGNMENT = 256  # bytes: enough for any vector load and for cuBLAS' alignment preferences


def _align(n: int) -> int:
    return -(-n // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def plan_memory(graph: Graph, *, max_num_tokens: int, max_output_rows: int) -> Graph:
    """Assign each activation (graph inputs and outputs included) an arena offset.

    Sizes take the symbolic dims at their maxima. A value lives from the node that writes it to
    the last node that reads it, both inclusive, so an op's output never aliases its inputs;
    graph inputs live from the start, graph outputs to the end. Offsets come from greedy
    best-offset placement, largest first (as in TFLite's arena planner): each value takes the
    lowest offset that overlaps no placed value with an overlapping lifetime.
    The plan lands in `meta["memory_plan"]`.
    """
    dims = {NUM_TOKENS: max_num_tokens, NUM_OUTPUT_ROWS: max_output_rows}
    start: dict[str, int] = {name: -1 for name in graph.inputs}
    end: dict[str, int] = {name: -1 for name in graph.inputs}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            end[name] = index
        for name in node.outputs:
            start[name], end[name] = index, index
    for name in graph.outputs:
        end[name] = len(graph.nodes)

    size = {name: _align(graph.values[name].nbytes(dims)) for name in start}
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    offsets: dict[str, int] = {}
    for name in sorted(start, key=lambda n: (-size[n], start[n], n)):
        conflicts = sorted((off, sz) for off, sz, s, e in placed if not (e < start[name] or end[name] < s))
        offset = 0
        for off, sz in conflicts:
            if offset + size[name] <= off:
                break
            offset = max(offset, off + sz)
        offsets[name] = offset
        placed.append((offset, size[name], start[name], end[name]))

    tensors: dict[str, Any] = {
        name: {"offset": offsets[name], "bytes": size[name], "shape": list(graph.values[name].shape),
               "dtype": graph.values[name].dtype}
        for name in sorted(offsets, key=lambda n: (offsets[n], n))
    }
    g = graph.copy()
    g.meta["memory_plan"] = {
        "alignment": ARENA_ALIGNMENT,
        "max_num_tokens": max_num_tokens,
        "max_output_rows": max_output_rows,
        "arena_bytes": max((offsets[n] + size[n] for n in offsets), default=0),
        "unplanned_bytes": sum(size.values()),  # what one buffer per value would take
        "tensors": tensors,
    }
    return g
