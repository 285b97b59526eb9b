#include "attention/attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "attention/attention_kernels.cuh"

namespace trtllm::kernels::attn {
TRTLLM_EXTERN_ATTEND(float, float)
TRTLLM_EXTERN_ATTEND(__nv_bfloat16, __nv_bfloat16)
TRTLLM_EXTERN_ATTEND(__nv_bfloat16, Fp8KvCache)
TRTLLM_EXTERN_ATTEND(__half, __half)
TRTLLM_EXTERN_ATTEND(__half, Fp8KvCache)
}  // namespace trtllm::kernels::attn

namespace trtllm::kernels {
namespace {

using namespace cuda;

using attn::Fp8KvCache;
using attn::KvScale;
using attn::kPrepWarps;
using attn::QkPrep;
using attn::kTileRows;
using attn::kv_row;

// grid (num_tokens, ceil((h + 2 h_kv) / kPrepWarps)); one warp per head of one token. C: the cache's
// element type (T, or Fp8KvCache: k and v are quantized from their float32 values).
template <class T, class C>
__global__ void qkv_prep_kernel(const T* qkv, float* q_out, C* kv, KvScale kvs, PagedBatchCuda b, int h, int h_kv,
                                int d, QkPrep<T> prep) {
    extern __shared__ float prep_smem[];
    const int token = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int head = blockIdx.y * kPrepWarps + warp;
    if (head >= h + 2 * h_kv) return;
    int lo = 0, hi = b.num_requests - 1;  // the request owning this token: last token_start <= token
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (b.token_start[mid] <= token) lo = mid; else hi = mid - 1;
    }
    const int r = lo, pos = b.past_len[r] + token - b.token_start[r];
    float* buf = prep_smem + warp * d;
    prep_head(qkv + int64_t{token} * (h + 2 * h_kv) * d, head, pos, h, h_kv, d, prep, buf, lane);
    if (head < h) {
        float* dst = q_out + (int64_t{token} * h + head) * d;
        for (int x = lane; x < d; x += 32) dst[x] = buf[x];
    } else {
        const int which = head < h + h_kv ? 0 : 1;
        const int kh = head - h - which * h_kv;
        C* dst = kv_row(kv, b, r, pos, which, kh, h_kv, d);
        for (int x = lane; x < d; x += 32) attn::store_kv(dst + x, buf[x], kvs);
    }
}

}  // namespace

int attention_tile_tokens(int num_heads, int num_kv_heads) {
    const int group = num_heads / num_kv_heads;
    if (group > kTileRows) {
        throw std::invalid_argument("CUDA attention: at most " + std::to_string(kTileRows) +
                                    " query heads per kv head, got " + std::to_string(group));
    }
    return kTileRows / group;
}

int attention_num_splits(int num_decode, int num_kv_heads, int max_len, int num_sms) {
    using attn::kMinKeysPerSplit;
    const int64_t blocks = std::max<int64_t>(1, int64_t{num_decode} * num_kv_heads);
    const int64_t want = (2 * int64_t{num_sms} + blocks - 1) / blocks;
    const int64_t most = std::min(attn::kMaxKeysPerSplit, std::max(1, (max_len + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
    return static_cast<int>(std::clamp<int64_t>(want, 1, most));
}

int64_t attention_partial_floats(int64_t decode_splits, int num_heads, int head_dim) {
    return decode_splits * num_heads * (head_dim + 2);
}

void plan_attention_work(const int32_t* new_len, int num_requests, int tile_tokens, std::vector<int32_t>& decode,
                         std::vector<int32_t>& tiles) {
    decode.clear();
    tiles.clear();
    for (int r = 0; r < num_requests; ++r) {
        if (new_len[r] == 1) {
            decode.push_back(r);
            continue;
        }
        for (int i0 = 0; i0 < new_len[r]; i0 += tile_tokens) {
            tiles.push_back(r);
            tiles.push_back(i0);
        }
    }
}

bool is_identity(const std::vector<int32_t>& decode) {
    for (size_t i = 0; i < decode.size(); ++i) {
        if (decode[i] != static_cast<int32_t>(i)) return false;
    }
    return true;
}

namespace {

template <class T, class C>
void run_attention(const T* qkv, T* out, C* kv, KvScale kvs, const PagedBatchCuda& batch, const AttentionParams& params,
                   const AttentionWork& work, const AttentionScratch& scratch, cudaStream_t stream) {
    const int h = params.num_heads, h_kv = params.num_kv_heads, d = params.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    QkPrep<T> prep;
    prep.inv_freq = params.rope_inv_freq;
    prep.q_norm = static_cast<const T*>(params.q_norm);
    prep.k_norm = static_cast<const T*>(params.k_norm);
    prep.eps = params.qk_norm_eps;
    // A batch of decode tokens only: the decode kernel preps its own token (one launch, not two).
    const bool decode_only = work.num_prefill_tiles == 0 && work.num_decode == work.num_tokens;
    if (!decode_only) {
        const dim3 prep_grid(work.num_tokens, (h + 2 * h_kv + kPrepWarps - 1) / kPrepWarps);
        qkv_prep_kernel<T, C><<<prep_grid, kPrepWarps * 32, sizeof(float) * kPrepWarps * d, stream>>>(
            qkv, scratch.q, kv, kvs, batch, h, h_kv, d, prep);
        CHECK_LAUNCH("qkv_prep_kernel");
    }
    const T* decode_qkv = decode_only ? qkv : nullptr;
    switch (d) {
#define TRTLLM_ATTEND_CASE(D)                                                                                    \
    case D:                                                                                                      \
        attn::launch_attend<T, C, D>(work, batch, scratch.q, decode_qkv, prep, kv, kvs, out, h, h_kv, scale, scratch, \
                                     stream);                                                                    \
        break;
        TRTLLM_ATTEND_CASE(8)
        TRTLLM_ATTEND_CASE(16)
        TRTLLM_ATTEND_CASE(32)
        TRTLLM_ATTEND_CASE(64)
        TRTLLM_ATTEND_CASE(128)
        TRTLLM_ATTEND_CASE(256)
#undef TRTLLM_ATTEND_CASE
        default:
            throw std::invalid_argument("CUDA attention supports head_dim 8, 16, 32, 64, 128 or 256, got " +
                                        std::to_string(d));
    }
}

// The FP8 cache's scales from the host copy of kv_scale, checked as the CPU checks them.
KvScale fp8_kv_scale(const float* kv_scale) {
    const float s = *kv_scale;
    if (!(std::isfinite(s) && s > 0.0f)) {
        throw std::invalid_argument("attention: kv_scale " + std::to_string(s) + " must be finite and > 0");
    }
    return KvScale{s, 1.0f / s};
}

}  // namespace

void attention_cuda(const void* qkv, void* out, DType dtype, void* kv_layer, const PagedBatchCuda& batch,
                    const AttentionParams& params, const AttentionWork& work, const AttentionScratch& scratch,
                    cudaStream_t stream) {
    const int h = params.num_heads, h_kv = params.num_kv_heads, d = params.head_dim;
    if (h <= 0 || h_kv <= 0 || d <= 0 || h % h_kv != 0) {
        throw std::invalid_argument("attention: need num_heads > 0 divisible by num_kv_heads > 0 and head_dim > 0");
    }
    if ((params.q_norm == nullptr) != (params.k_norm == nullptr)) {
        throw std::invalid_argument("attention: q_norm and k_norm come together");
    }
    if (work.num_tokens <= 0) return;
    // The decode merge keeps one weight per split in a [group][kMaxKeysPerSplit] buffer and counts
    // the blocks that finished in decode_done.
    if (work.num_decode > 0 && (work.num_splits < 1 || work.num_splits > attn::kMaxKeysPerSplit)) {
        throw std::invalid_argument("attention: num_splits must be 1 to " + std::to_string(attn::kMaxKeysPerSplit) +
                                    ", got " + std::to_string(work.num_splits));
    }
    if (work.num_decode > 0 && work.num_splits > 1 && scratch.decode_done == nullptr) {
        throw std::invalid_argument("attention: decode with several splits needs scratch.decode_done");
    }
    if (params.kv_scale != nullptr) {
        const KvScale kvs = fp8_kv_scale(params.kv_scale);
        auto* kv = static_cast<Fp8KvCache*>(kv_layer);
        if (dtype == DType::kBFloat16) {
            using T = __nv_bfloat16;
            run_attention<T, Fp8KvCache>(static_cast<const T*>(qkv), static_cast<T*>(out), kv, kvs, batch, params, work,
                                         scratch, stream);
        } else if (dtype == DType::kFloat16) {
            using T = __half;
            run_attention<T, Fp8KvCache>(static_cast<const T*>(qkv), static_cast<T*>(out), kv, kvs, batch, params, work,
                                         scratch, stream);
        } else {
            throw std::invalid_argument(std::string("CUDA attention: the FP8 KV cache needs bfloat16 or float16 "
                                                    "activations, got ") + dtype_name(dtype));
        }
        return;
    }
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        run_attention<T, T>(static_cast<const T*>(qkv), static_cast<T*>(out), static_cast<T*>(kv_layer), KvScale{}, batch,
                            params, work, scratch, stream);
    });
}

}  // namespace trtllm::kernels
