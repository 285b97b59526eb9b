"""trtllm_build.convert on GGUF input: llama.cpp files become the same checkpoint as HF ones.

The SmolLM2 test compares with transformers' own GGUF loader (same dequantization, same
q/k un-permutation); the tiny-file tests write GGUFs with llama.cpp's `permute` and compare
with the HF state dict they came from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trtllm_build.convert import ConvertError, convert, load_checkpoint
from trtllm_build.gguf_reader import unpermute_rope

gguf = pytest.importorskip("gguf")


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute, verbatim in numpy."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)  # 6 heads of head_dim 8
    np.testing.assert_array_equal(unpermute_rope(llama_cpp_permute(w, 6), 6), w)
    b = np.arange(3 * 4, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_rope(llama_cpp_permute(b, 3), 3), b)
    assert not np.array_equal(llama_cpp_permute(w, 6), w)


# ---------------------------------------------------------------------------- tiny GGUF files

_GGUF_LAYER = {"input_layernorm.weight": "attn_norm.weight",
               "post_attention_layernorm.weight": "ffn_norm.weight",
               "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
               "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
               "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
               "self_attn.o_proj.weight": "attn_output.weight",
               "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
               "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
               "mlp.down_proj.weight": "ffn_down.weight"}


def _write_gguf(path: Path, arch: str, sd: dict[str, np.ndarray], heads: int, kv_heads: int,
                head_dim: int, extra: dict[str, np.ndarray] | None = None) -> None:
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"model\.layers\.(\d+)\.", k)))
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(sd["model.embed_tokens.weight"].shape[1])
    w.add_feed_forward_length(sd["model.layers.0.mlp.up_proj.weight"].shape[0])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(20000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(sd["model.embed_tokens.weight"].shape[0])
    for name, t in sd.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            i, rest = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name).groups()
            gname = f"blk.{i}.{_GGUF_LAYER[rest]}"
            if arch == "llama" and rest.startswith("self_attn.q_proj"):
                t = llama_cpp_permute(t, heads)
            elif arch == "llama" and rest.startswith("self_attn.k_proj"):
                t = llama_cpp_permute(t, kv_heads)
        w.add_tensor(gname, np.ascontiguousarray(t, dtype=np.float32))
    for gname, t in (extra or {}).items():
        w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tiny_hf(family: str) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    small = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2)
    config = {"llama": lambda: transformers.LlamaConfig(**small, tie_word_embeddings=True),
              "qwen2": lambda: transformers.Qwen2Config(**small, tie_word_embeddings=False),
              "qwen3": lambda: transformers.Qwen3Config(**small, head_dim=16)}[family]()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_tiny_gguf_converts_to_the_hf_tensors(tmp_path, arch) -> None:
    sd = _tiny_hf(arch)
    head_dim = 16 if arch == "qwen3" else 8
    _write_gguf(tmp_path / "m.gguf", arch, sd, heads=8, kv_heads=2, head_dim=head_dim)
    config = convert(tmp_path / "m.gguf", tmp_path / "ckpt", "float32", 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (8, 2, head_dim)
    assert config.rope.theta == 20000.0 and config.max_position_embeddings == 256
    assert config.tie_word_embeddings == (arch == "llama")
    assert config.qkv_bias == (arch == "qwen2") and config.qk_norm == (arch == "qwen3")
    ranks = [load_checkpoint(tmp_path / "ckpt", r)[1] for r in range(2)]
    np.testing.assert_array_equal(np.concatenate([r["layers.1.attn.q.weight"] for r in ranks]),
                                  sd["model.layers.1.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(np.concatenate([r["layers.0.attn.k.weight"] for r in ranks]),
                                  sd["model.layers.0.self_attn.k_proj.weight"])
    np.testing.assert_array_equal(ranks[1]["layers.1.mlp.down.weight"],
                                  sd["model.layers.1.mlp.down_proj.weight"][:, 64:])
    lm_head = sd["model.embed_tokens.weight"] if arch == "llama" else sd["lm_head.weight"]
    np.testing.assert_array_equal(np.concatenate([r["lm_head.weight"] for r in ranks]), lm_head)
    if arch == "qwen2":
        np.testing.assert_array_equal(np.concatenate([r["layers.0.attn.q.bias"] for r in ranks]),
                                      sd["model.layers.0.self_attn.q_proj.bias"])
    if arch == "qwen3":
        np.testing.assert_array_equal(ranks[0]["layers.1.attn.k_norm.weight"],
                                      sd["model.layers.1.self_attn.k_norm.weight"])


def test_gguf_with_llama3_rope_freqs_is_rejected(tmp_path) -> None:
    sd = _tiny_hf("llama")
    _write_gguf(tmp_path / "m.gguf", "llama", sd, 8, 2, 8, extra={"rope_freqs.weight": np.ones(4, np.float32)})
    with pytest.raises(ConvertError, match="rope_freqs"):
        convert(tmp_path / "m.gguf", tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_gguf_of_an_unsupported_architecture_is_rejected(tmp_path) -> None:
    w = gguf.GGUFWriter(tmp_path / "m.gguf", "mamba")
    w.add_tensor("token_embd.weight", np.ones((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConvertError, match="GGUF architecture 'mamba' is not supported"):
        convert(tmp_path / "m.gguf", tmp_path / "ckpt")


# ---------------------------------------------------------------------------- SmolLM2 Q4_1

def test_smollm2_every_tensor_equals_transformers_gguf_loader(smollm2) -> None:
    ckpt, _, model = smollm2
    _, weights = load_checkpoint(ckpt, 0)
    ref = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = {"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    layer = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
             "attn.q.weight": "self_attn.q_proj.weight", "attn.k.weight": "self_attn.k_proj.weight",
             "attn.v.weight": "self_attn.v_proj.weight", "attn.o.weight": "self_attn.o_proj.weight",
             "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
             "mlp.down.weight": "mlp.down_proj.weight"}
    for i in range(model.config.num_hidden_layers):
        names |= {f"layers.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in layer.items()}
    assert sorted(weights) == sorted(names)  # tied: no lm_head at tp 1
    for ours, theirs in names.items():
        np.testing.assert_allclose(weights[ours], ref[theirs], rtol=1e-6, atol=1e-7, err_msg=ours)


def test_smollm2_config_matches_transformers(smollm2) -> None:
    _, config, model = smollm2
    hf = model.config
    assert (config.architecture, config.hf_architecture) == ("llama", "LlamaForCausalLM")
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == \
        (hf.vocab_size, hf.hidden_size, hf.intermediate_size)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == \
        (hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim)
    assert config.max_position_embeddings == hf.max_position_embeddings
    assert config.rope.theta == hf.rope_parameters["rope_theta"] and config.rope.scaling_type is None
    assert config.norm_eps == pytest.approx(hf.rms_norm_eps)
    assert config.tie_word_embeddings and hf.tie_word_embeddings
    assert config.bos_token_id == hf.bos_token_id and config.eos_token_id == [hf.eos_token_id]


def test_smollm2_tokenizer_files_load_and_agree_with_the_config(smollm2) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    ckpt, config, _ = smollm2
    tok = tokenizers.Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    assert tok.get_vocab_size() == config.vocab_size
    text = "Hello world, this is a test."
    assert tok.decode(tok.encode(text).ids) == text
    tok_config = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == tok.id_to_token(config.eos_token_id[0]) == "<|im_end|>"
