"""Graph passes, each a pure function graph -> graph. `optimize` runs them in the build's order."""

from __future__ import annotations

from ..graph.ir import Graph
from ..graph.opset import verify_engine_graph
from .cleanup import remove_dead_nodes
from .fusion import fold_attention_inputs, fuse_gate_up, fuse_qkv, fuse_residual_norm
from .memory import plan_memory
from .parallel import fuse_all_reduce_norm, insert_tp_collectives
from .quantization import fold_pre_quant_scales, fuse_activation_quant, quantize_linears

# Order matters: q/k norm and rope must be folded before q, k, v can be packed into one GEMM;
# pre-quant scales fold into norms once q/k/v (gate/up) share one linear and the residual add is
# fused; linears are lowered to their quantized ops after the TP pass (which reads `linear`);
# activation quantization fuses into producers last.
PIPELINE = (fold_attention_inputs, fuse_qkv, fuse_gate_up, fuse_residual_norm, insert_tp_collectives,
            fuse_all_reduce_norm, fold_pre_quant_scales, quantize_linears, fuse_activation_quant, remove_dead_nodes)


def optimize(graph: Graph, *, max_num_tokens: int, max_output_rows: int) -> Graph:
    """Run the passes, check the result against the op set, and plan activation memory.
    `max_output_rows`: max_batch_size, or max_num_tokens when context logits are gathered."""
    for graph_pass in PIPELINE:
        graph = graph_pass(graph)
    verify_engine_graph(graph)
    return plan_memory(graph, max_num_tokens=max_num_tokens, max_output_rows=max_output_rows)


__all__ = ["PIPELINE", "optimize", "fold_attention_inputs", "fuse_qkv", "fuse_gate_up", "fuse_residual_norm",
           "insert_tp_collectives", "fuse_all_reduce_norm", "fold_pre_quant_scales", "quantize_linears", "fuse_activation_quant",
           "remove_dead_nodes", "plan_memory"]
