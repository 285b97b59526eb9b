// CUDA paged attention: the op of attention.h (q/k norm, RoPE, KV-cache write, causal GQA
// attention over the paged cache):
//   1. qkv_prep: per (token, head) q/k RMSNorm and RoPE; q to a float32 scratch, k and v into
//      the cache through the block table (a batch of decode tokens only skips this launch: the
//      decode kernel does it for its own token);
//   2. attention, split by how many new tokens each request brings:
//      - decode requests (new_len == 1): flash-decoding. The request's keys are cut into up to
//        `num_splits` ranges attended in parallel blocks, each for all query heads of one kv head
//        (GQA: a key row is read once per group); the last block of a request to finish merges
//        the partial softmaxes;
//      - prefill requests (new_len > 1, chunked prefill included): flash-attention style tiles
//        of query rows (tokens x heads of one kv group) against key/value tiles staged in shared
//        memory, online softmax, causal mask.
// Every key, new or old, is read back from the cache after it is written, as on the CPU, so a
// token's result does not depend on whether its keys arrived in this iteration or earlier.
// Which path a request takes depends on its own new_len only, so batching does not change it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "attention/attention.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

// PagedBatch with device pointers.
struct PagedBatchCuda {
    int num_requests = 0;
    const int32_t* past_len = nullptr;     // [R]
    const int32_t* new_len = nullptr;      // [R]
    const int32_t* token_start = nullptr;  // [R]
    const int32_t* block_table = nullptr;  // [R, max_blocks_per_seq]
    int max_blocks_per_seq = 0;
    int tokens_per_block = 0;
};

// How the iteration's requests are split between the two kernels (host-planned, device lists).
struct AttentionWork {
    int num_tokens = 0;
    int num_decode = 0;
    const int32_t* decode_requests = nullptr;  // [num_decode] request indices with new_len == 1
    bool decode_identity = false;              // decode_requests is 0, 1, 2, ...: the kernel skips loading it
    int num_prefill_tiles = 0;
    const int32_t* prefill_tiles = nullptr;    // [num_prefill_tiles, 2]: (request, first new token of the tile)
    int tile_tokens = 1;                       // new tokens per prefill tile: attention_tile_tokens()
    int num_splits = 1;                        // decode key ranges: attention_num_splits()
};

// Device scratch the kernels need; sizes from the functions below.
struct AttentionScratch {
    float* q = nullptr;        // [num_tokens, num_heads, head_dim]
    float* partial = nullptr;  // attention_partial_floats(num_decode, ...)
    int* decode_done = nullptr;  // [num_decode * num_kv_heads], zeros; the decode kernel leaves them zero
};

// Tokens per prefill tile: 64 query rows of one kv group.
int attention_tile_tokens(int num_heads, int num_kv_heads);
// Decode key ranges per request: enough blocks to give each of the GPU's `num_sms`
// multiprocessors two, never ranges under 64 keys for sequences of `max_len` (nor more than 256).
// A large batch gets 1 (each block walks its whole sequence), batch 1 gets many; the kernel
// takes fewer for a shorter sequence.
int attention_num_splits(int num_decode, int num_kv_heads, int max_len, int num_sms);
// Scratch floats for `decode_splits` = num_decode * num_splits partial results.
int64_t attention_partial_floats(int64_t decode_splits, int num_heads, int head_dim);
// Host: the decode list and prefill tiles of a batch.
void plan_attention_work(const int32_t* new_len, int num_requests, int tile_tokens, std::vector<int32_t>& decode,
                         std::vector<int32_t>& tiles);
// Whether a decode list is 0, 1, 2, ... (AttentionWork::decode_identity).
bool is_identity(const std::vector<int32_t>& decode);

// `params` pointers (rope_inv_freq, q_norm, k_norm) are device pointers; params.kv_scale (FP8 KV
// cache, bfloat16 / float16 activations) is read on the host at launch: kv_layer then holds
// float8_e4m3fn, written and read through attention/kv_cache_access.cuh.
void attention_cuda(const void* qkv, void* out, DType dtype, void* kv_layer, const PagedBatchCuda& batch,
                    const AttentionParams& params, const AttentionWork& work, const AttentionScratch& scratch,
                    cudaStream_t stream);

}  // namespace trtllm::kernels
