"""A float64 numpy interpreter of graph IR, for one request's prefill (positions 0..n-1).

Independent of the runtime: it is the reference the tests hold the graph, the passes and the
converter to (against Hugging Face transformers). TP graphs run as all ranks in lockstep, with
all_reduce / all_gather summing / concatenating across ranks (all_reduce_add_rms_norm: the sum, then
the residual norm).
"""

from __future__ import annotations

import math

import numpy as np

from trtllm_build.graph.ir import Graph, Node, dtype_to_numpy


def rope_inv_freq(head_dim: int, rope: dict) -> np.ndarray:
    inv_freq = 1.0 / (rope["theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    kind = rope.get("scaling_type")
    if kind == "linear":
        return inv_freq / rope["factor"]
    if kind == "llama3":
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    assert kind is None, kind
    return inv_freq


def apply_rope(x: np.ndarray, positions: np.ndarray, head_dim: int, rope: dict) -> np.ndarray:
    """Rotate-half layout: dims [i, i + head_dim/2] form a pair."""
    t = x.reshape(x.shape[0], -1, head_dim)
    angles = positions[:, None].astype(np.float64) * rope_inv_freq(head_dim, rope)[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    half = head_dim // 2
    a, b = t[..., :half], t[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(x.shape)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    t = x.reshape(*x.shape[:-1], -1, w.shape[0])
    t = t / np.sqrt(np.mean(t * t, axis=-1, keepdims=True) + eps) * w
    return t.reshape(x.shape)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def causal_attention(q, k, v, num_heads, num_kv_heads, head_dim):
    n = q.shape[0]
    q = q.reshape(n, num_heads, head_dim)
    group = num_heads // num_kv_heads
    k = np.repeat(k.reshape(n, num_kv_heads, head_dim), group, axis=1)
    v = np.repeat(v.reshape(n, num_kv_heads, head_dim), group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
    scores = np.where(np.tril(np.ones((n, n), bool))[None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).reshape(n, num_heads * head_dim)


def quantize(x, scale, dtype):
    """Op set v2 quantization, stated independently of the builder: convert(x * float32(1 / scale)),
    nearest even; fp8 saturates to +-448, int8 to [-128, 127]. Returns the dequantized value * scale
    is NOT applied: the quantized numbers as float64."""
    import ml_dtypes
    inv = (np.float32(1) / np.asarray(scale, np.float32)).astype(np.float32)
    v = (np.asarray(x, np.float32) * inv).astype(np.float32)
    if dtype == "float8_e4m3fn":
        return np.clip(v, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    return np.clip(np.rint(v), -128, 127).astype(np.float64)


def weight_only_dequant(w, scale, bits, dtype):
    if bits == 4:
        u = np.asarray(w, np.uint8)
        q = np.stack([u & 15, u >> 4], axis=-1).reshape(u.shape[0], -1).astype(np.int64)
        q = np.where(q >= 8, q - 16, q)
    else:
        q = np.asarray(w).astype(np.int64)
    n, k = q.shape
    g = scale.shape[1]
    deq = (q.reshape(n, g, k // g).astype(np.float32) * np.asarray(scale, np.float32)[:, :, None]).reshape(n, k)
    return deq.astype(dtype).astype(np.float64)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def run_graphs(graphs: list[Graph], input_ids: np.ndarray, output_rows: list[int] | None = None) -> dict:
    """Run the graphs of all TP ranks (identical op lists) in lockstep; returns rank 0's values.
    `output_rows`: the tokens whose logits to gather (default: the last one)."""
    n = len(input_ids)
    rows = np.asarray(output_rows if output_rows is not None else [n - 1])
    envs = [{"input_ids": np.asarray(input_ids), "position_ids": np.arange(n), "output_rows": rows} for _ in graphs]
    weights = [{k: (v if v.dtype.kind in "iu" or v.dtype.name == "float8_e4m3fn" else np.asarray(v, np.float64))
                for k, v in g.weights.items()} for g in graphs]
    for step, node in enumerate(graphs[0].nodes):
        if node.op in ("all_reduce", "all_reduce_add_rms_norm", "all_gather"):
            parts = [env[graphs[r].nodes[step].inputs[0]] for r, env in enumerate(envs)]
            if node.op == "all_reduce_add_rms_norm":
                total = np.sum(parts, axis=0)
                for r, env in enumerate(envs):  # then each rank's add_rms_norm on the sum
                    rank_node = graphs[r].nodes[step]
                    env[rank_node.outputs[0] + ".reduced"] = total
                    add_norm = Node("add_rms_norm", [rank_node.outputs[0] + ".reduced", rank_node.inputs[1]],
                                    rank_node.outputs, rank_node.attrs, rank_node.weights)
                    _run_node(add_norm, env, weights[r], graphs[r])
            elif node.op == "all_reduce":
                total = np.sum(parts, axis=0)
                for r, env in enumerate(envs):
                    bias = graphs[r].nodes[step].weights.get("bias")
                    env[node.outputs[0]] = total + (weights[r][bias] if bias else 0)
            else:
                for env in envs:
                    env[node.outputs[0]] = np.concatenate(parts, axis=-1)
            continue
        for r, env in enumerate(envs):
            _run_node(graphs[r].nodes[step], env, weights[r], graphs[r])
    return envs[0]


def run_graph(graph: Graph, input_ids: np.ndarray, output_rows: list[int] | None = None) -> dict:
    return run_graphs([graph], input_ids, output_rows)


def _run_node(node, env, weights, graph) -> None:
    x = [env[name] for name in node.inputs]
    w = {role: weights[name] for role, name in node.weights.items()}
    w = {role: (v.astype(np.float64) if v.dtype.name == "float8_e4m3fn" else v) for role, v in w.items()}
    a = node.attrs
    op = node.op
    if op in ("fp8_linear", "int8_linear"):
        alpha = np.float32(w["input_scale"][0]) * np.asarray(w["weight_scale"], np.float32)
        out = [x[0] @ np.asarray(w["weight"], np.float64).T * alpha.astype(np.float64) + w.get("bias", 0)]
    elif op == "weight_only_linear":
        act = np.dtype(dtype_to_numpy(graph.values[node.inputs[0]].dtype))
        xin = x[0] * w["pre_quant_scale"] if "pre_quant_scale" in w else x[0]
        deq = weight_only_dequant(w["weight"], np.asarray(w["weight_scale"]).astype(act), a["weight_bits"], act)
        out = [xin @ deq.T + w.get("bias", 0)]
    elif op == "quantize":
        out = [quantize(x[0], w["out_scale"], graph.values[node.outputs[0]].dtype)]
    elif op == "embedding":
        out = [w["weight"][x[0]]]
    elif op == "linear":
        out = [x[0] @ w["weight"].T + (w["bias"] if "bias" in w else 0)]
    elif op == "rms_norm":
        out = [rms_norm(x[0], w["weight"], a["eps"])]
    elif op == "layer_norm":
        out = [layer_norm(x[0], w["weight"], w["bias"], a["eps"])]
    elif op == "add_rms_norm":
        s = x[0] + x[1]
        out = [rms_norm(s, w["weight"], a["eps"]), s]
    elif op == "add_layer_norm":
        s = x[0] + x[1]
        out = [layer_norm(s, w["weight"], w["bias"], a["eps"]), s]
    elif op == "add":
        out = [x[0] + x[1]]
    elif op == "mul":
        out = [x[0] * x[1]]
    elif op == "silu":
        out = [x[0] / (1 + np.exp(-x[0]))]
    elif op == "silu_mul":
        g, u = np.split(x[0], 2, axis=-1)
        out = [g / (1 + np.exp(-g)) * u]
    elif op == "gelu_tanh":
        out = [_gelu_tanh(x[0])]
    elif op == "rope":
        rope = {k: v for k, v in a.items() if k != "head_dim"}
        out = [apply_rope(x[0], env["position_ids"], a["head_dim"], rope)]
    elif op == "attention":
        hd, nh, nkv = a["head_dim"], a["num_heads"], a["num_kv_heads"]
        if len(x) == 1:
            q, k, v = np.split(x[0], [nh * hd, (nh + nkv) * hd], axis=-1)
        else:
            q, k, v = x
        if "q_norm" in w:
            q, k = rms_norm(q, w["q_norm"], a["qk_norm_eps"]), rms_norm(k, w["k_norm"], a["qk_norm_eps"])
        if a.get("rope"):
            q = apply_rope(q, env["position_ids"], hd, a["rope"])
            k = apply_rope(k, env["position_ids"], hd, a["rope"])
        if "kv_scale" in w:  # FP8 KV cache: what attention reads back
            s = np.float32(w["kv_scale"][0])
            k, v = quantize(k, [s], "float8_e4m3fn") * s, quantize(v, [s], "float8_e4m3fn") * s
        out = [causal_attention(q, k, v, nh, nkv, hd)]
    elif op == "gather_rows":
        out = [x[0][env["output_rows"]]]
    else:
        raise NotImplementedError(op)
    if "out_scale" in w and op != "quantize":  # op set v2: the producer quantizes its first output
        out[0] = quantize(out[0], w["out_scale"], graph.values[node.outputs[0]].dtype)
    for name, value in zip(node.outputs, out):
        env[name] = value
