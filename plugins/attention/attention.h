// Paged causal attention with GQA, q/k RMSNorm and RoPE applied on the way in (op set v1, docs/opset.md).
#pragma once

#include <cstdint>
#include <vector>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

enum class RopeScaling : int32_t { kNone, kLinear, kLlama3 };

struct RopeParams {
    float theta = 10000.0f;
    RopeScaling scaling = RopeScaling::kNone;
    float factor = 1.0f;
    float low_freq_factor = 1.0f;
    float high_freq_factor = 4.0f;
    int original_max_position_embeddings = 8192;
};

// inv_freq[i], i < head_dim / 2, in float32 as Hugging Face computes it (so fp32 logits match).
std::vector<float> rope_inv_freq(int head_dim, const RopeParams& rope);

struct AttentionParams {
    int num_heads = 0;                    // query heads on this rank
    int num_kv_heads = 0;
    int head_dim = 0;
    const float* rope_inv_freq = nullptr; // [head_dim / 2]; nullptr: no rope
    const void* q_norm = nullptr;         // [head_dim] in the activation dtype; nullptr: no q/k norm
    const void* k_norm = nullptr;
    float qk_norm_eps = 1e-6f;
    // FP8 KV cache (op set v2): when kv_scale is set, the cache holds float8_e4m3fn values
    // k_q = fp8(k * (1 / kv_scale)) and reads them back as float(k_q) * kv_scale; else the cache
    // is in the activation dtype.
    const float* kv_scale = nullptr;
};

// The iteration's packed batch as attention sees it. Request r owns rows
// [token_start[r], token_start[r] + new_len[r]) of qkv / out; its token i is at position past_len[r] + i.
struct PagedBatch {
    int num_requests = 0;
    const int32_t* past_len = nullptr;     // [R] tokens already in the cache
    const int32_t* new_len = nullptr;      // [R]
    const int32_t* token_start = nullptr;  // [R]
    const int32_t* block_table = nullptr;  // [R, max_blocks_per_seq] pool block ids
    int max_blocks_per_seq = 0;
    int tokens_per_block = 0;
};

// Bytes of one KV block of one layer: [2 (k, v)][num_kv_heads][tokens_per_block][head_dim];
// `dtype` is the cache's element type (the activation dtype, or float8_e4m3fn).
inline int64_t kv_block_bytes(int num_kv_heads, int tokens_per_block, int head_dim, DType dtype) {
    return int64_t{2} * num_kv_heads * tokens_per_block * head_dim * static_cast<int64_t>(dtype_size(dtype));
}

// qkv [T, (h + 2 h_kv) d] -> out [T, h d]. Writes the new k, v (after norm and rope) into
// kv_layer (this layer's [num_blocks] blocks, layout above), then attends causally over the
// request's cached and new keys. Scale 1/sqrt(d), softmax in float32.
void attention_cpu(const void* qkv, void* out, DType dtype, void* kv_layer, const PagedBatch& batch,
                   const AttentionParams& params);

}  // namespace trtllm::kernels
