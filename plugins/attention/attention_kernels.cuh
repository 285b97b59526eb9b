// Kernels of the attention op's attend step (decode, combine, prefill on CUDA cores; the
// tensor-core prefill for bf16/fp16 and head_dim 64/128 is in attention_prefill_tc.cuh) and their launcher,
// shared by the per-dtype translation units attention_cuda_{f32,bf16,f16}.cu (split so that a
// parallel build compiles the 15 instantiations of each dtype at the same time).
#pragma once

#include "attention/attention_cuda.h"
#include "attention/attention_prefill_tc.cuh"
#include "attention/kv_cache_access.cuh"
#include "cuda_common.cuh"

namespace trtllm::kernels::attn {

using namespace cuda;

constexpr int kPrepWarps = 4;
constexpr int kDecodeThreads = 128;
constexpr int kMaxKeysPerSplit = 256;
constexpr int kGroupChunk = 4;        // query heads per register pass in the decode kernel
constexpr int kDecodeMinBlocks = 8;   // decode blocks resident per SM: registers capped so that a large batch keeps
                                      // enough loads in flight to stream the KV cache at full bandwidth

// The decode kernel's P·V partial sums: a warp holds 32 / (D / V) key groups, added by shuffles first,
// so shared memory keeps one slot per warp (or per key group when a row spans whole warps).
template <class T, int D>
constexpr int decode_red_slots() {
    constexpr int kVecPerRow = D / kVec<T>;
    constexpr int kKeyGroups = kDecodeThreads / kVecPerRow;
    return kVecPerRow >= 32 ? kKeyGroups : kDecodeThreads / 32;
}
constexpr int kTileRows = 64;         // query rows (token x head) per prefill tile
constexpr int kKeyTile = 32;
constexpr int kPrefillThreads = 128;  // two threads per query row

template <class T>
__device__ __forceinline__ T* kv_row(T* kv, const PagedBatchCuda& b, int r, int pos, int which, int kh, int h_kv, int d) {
    const int64_t block = b.block_table[int64_t{r} * b.max_blocks_per_seq + pos / b.tokens_per_block];
    const int64_t index = ((block * 2 + which) * h_kv + kh) * b.tokens_per_block + pos % b.tokens_per_block;
    return kv + index * d;
}

// C is the cache's element type (T, or Fp8KvCache read through kv_cache_access.cuh).
// grid (num_decode, h_kv, num_splits), kDecodeThreads threads. Each block takes one key range
// of one request for all query heads of one kv head, in tiles of kMaxKeysPerSplit keys with an
// online softmax (running max and sum per head, output rescaled per tile). Partial results per
// (decode request, head, split): o [D] unnormalized, then (m, l); with one split (large decode
// batches) the block writes the normalized output itself, as decode_combine_kernel would.
template <class T, class C, int D>
__global__ void __launch_bounds__(kDecodeThreads, kDecodeMinBlocks) decode_kernel(const float* q, const C* kv, KvScale kvs, PagedBatchCuda b,
                                                                const int32_t* decode_requests, int h, int h_kv,
                                                                float scale, int num_splits, float* part_o,
                                                                float* part_ml, T* out) {
    constexpr int V = kVec<T>;
    constexpr int kVecPerRow = D / V;
    constexpr int kKeyGroups = kDecodeThreads / kVecPerRow;
    constexpr int kSlots = decode_red_slots<T, D>();
    static_assert(kVecPerRow <= kDecodeThreads && kDecodeThreads % kVecPerRow == 0, "head_dim too large");
    extern __shared__ float dec_smem[];
    const int dec = blockIdx.x, kh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x;
    const int group = h / h_kv;
    const int r = decode_requests[dec];
    const int len = b.past_len[r] + 1;
    const int token = b.token_start[r];
    const int chunk = (len + num_splits - 1) / num_splits;
    const int k0 = split * chunk, n = min(len, k0 + chunk) - k0;
    const int64_t part0 = (int64_t{dec} * h + int64_t{kh} * group) * num_splits + split;  // + g * num_splits
    if (n <= 0) {
        for (int g = tid; g < group; g += blockDim.x) {
            part_ml[(part0 + int64_t{g} * num_splits) * 2] = -INFINITY;
            part_ml[(part0 + int64_t{g} * num_splits) * 2 + 1] = 0.0f;
        }
        return;
    }
    float* qs = dec_smem;                                   // [group][D]
    float* os = qs + group * D;                             // [group][D] running output
    float* sc = os + group * D;                             // [group][kMaxKeysPerSplit]
    float* red = sc + group * kMaxKeysPerSplit;             // [kSlots][kGroupChunk][D]
    float* ml = red + kSlots * kGroupChunk * D;             // [group][3]: running max, sum, this tile's rescale
    for (int i = tid; i < group * D; i += blockDim.x) {
        qs[i] = q[(int64_t{token} * h + int64_t{kh} * group) * D + i];
        os[i] = 0.0f;
    }
    for (int g = tid; g < group; g += blockDim.x) {
        ml[3 * g] = -INFINITY;
        ml[3 * g + 1] = 0.0f;
    }
    __syncthreads();
    const int warp = tid / 32, lane = tid % 32;
    const int xv = tid % kVecPerRow, kg = tid / kVecPerRow;
    for (int t0 = 0; t0 < n; t0 += kMaxKeysPerSplit) {
        const int nt = min(kMaxKeysPerSplit, n - t0);
        const int kt = k0 + t0;  // first key of the tile
        // Scores: one key row per thread, read once in 16-byte vectors, dotted with every head of the group.
        for (int j = tid; j < nt; j += blockDim.x) {
            const C* krow = kv_row(kv, b, r, kt + j, 0, kh, h_kv, D);
            for (int gb = 0; gb < group; gb += kGroupChunk) {
                float dot[kGroupChunk];
#pragma unroll
                for (int g = 0; g < kGroupChunk; ++g) dot[g] = 0.0f;
#pragma unroll 4
                for (int x0 = 0; x0 < D; x0 += V) {
                    float kf[V];
                    load_kv_vec<T>(krow + x0, kf, kvs);
#pragma unroll
                    for (int g = 0; g < kGroupChunk; ++g) {
                        if (gb + g < group) {
                            const float* qg = qs + (gb + g) * D + x0;
#pragma unroll
                            for (int i = 0; i < V; ++i) dot[g] += kf[i] * qg[i];
                        }
                    }
                }
#pragma unroll
                for (int g = 0; g < kGroupChunk; ++g) {
                    if (gb + g < group) sc[(gb + g) * kMaxKeysPerSplit + j] = dot[g] * scale;
                }
            }
        }
        __syncthreads();
        // Online softmax: one warp per head.
        for (int g = warp; g < group; g += kDecodeThreads / 32) {
            float* s = sc + g * kMaxKeysPerSplit;
            float m = ml[3 * g];
            for (int j = lane; j < nt; j += 32) m = fmaxf(m, s[j]);
            m = warp_max(m);  // finite: the tile has at least one key
            float l = 0.0f;
            for (int j = lane; j < nt; j += 32) {
                const float e = expf(s[j] - m);
                s[j] = e;
                l += e;
            }
            l = warp_sum(l);
            __syncwarp();
            if (lane == 0) {
                const float corr = expf(ml[3 * g] - m);  // 0 on the first tile
                ml[3 * g] = m;
                ml[3 * g + 1] = ml[3 * g + 1] * corr + l;
                ml[3 * g + 2] = corr;
            }
        }
        __syncthreads();
        // P·V: thread (key group kg, vector xv) sums rows j = kg (mod kKeyGroups); the key groups of a warp
        // are added by shuffles, then the slots through shared memory.
        for (int gb = 0; gb < group; gb += kGroupChunk) {
            float acc[kGroupChunk][V];
#pragma unroll
            for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                for (int i = 0; i < V; ++i) acc[g][i] = 0.0f;
            }
#pragma unroll 4
            for (int j = kg; j < nt; j += kKeyGroups) {
                float vf[V];
                load_kv_vec<T>(kv_row(kv, b, r, kt + j, 1, kh, h_kv, D) + xv * V, vf, kvs);
#pragma unroll
                for (int g = 0; g < kGroupChunk; ++g) {
                    if (gb + g < group) {
                        const float p = sc[(gb + g) * kMaxKeysPerSplit + j];
#pragma unroll
                        for (int i = 0; i < V; ++i) acc[g][i] += p * vf[i];
                    }
                }
            }
            if constexpr (kVecPerRow < 32) {
#pragma unroll
                for (int off = kVecPerRow; off < 32; off *= 2) {
#pragma unroll
                    for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                        for (int i = 0; i < V; ++i) acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], off);
                    }
                }
            }
            if (kVecPerRow >= 32 || lane < kVecPerRow) {
                const int slot = kVecPerRow >= 32 ? kg : warp;
#pragma unroll
                for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                    for (int i = 0; i < V; ++i) red[(slot * kGroupChunk + g) * D + xv * V + i] = acc[g][i];
                }
            }
            __syncthreads();
            for (int idx = tid; idx < kGroupChunk * D; idx += blockDim.x) {
                const int g = idx / D, x = idx % D;
                if (gb + g >= group) continue;
                float sum = 0.0f;
                for (int k = 0; k < kSlots; ++k) sum += red[(k * kGroupChunk + g) * D + x];
                float& o = os[(gb + g) * D + x];
                o = o * ml[3 * (gb + g) + 2] + sum;
            }
            __syncthreads();
        }
    }
    if (num_splits == 1) {
        for (int i = tid; i < group * D; i += blockDim.x) {
            const float inv = 1.0f / ml[3 * (i / D) + 1];
            out[(int64_t{token} * h + int64_t{kh} * group) * D + i] = from_float<T>(os[i] * inv);
        }
        return;
    }
    for (int i = tid; i < group * D; i += blockDim.x) {
        part_o[(part0 + int64_t{i / D} * num_splits) * D + i % D] = os[i];
    }
    for (int g = tid; g < group; g += blockDim.x) {
        part_ml[(part0 + int64_t{g} * num_splits) * 2] = ml[3 * g];
        part_ml[(part0 + int64_t{g} * num_splits) * 2 + 1] = ml[3 * g + 1];
    }
}

// grid (num_decode, h): merges the splits' partial softmaxes into out.
template <class T>
__global__ void decode_combine_kernel(const float* part_o, const float* part_ml, const PagedBatchCuda b,
                                      const int32_t* decode_requests, int h, int d, int num_splits, T* out) {
    const int dec = blockIdx.x, head = blockIdx.y;
    const int token = b.token_start[decode_requests[dec]];
    const int64_t base = (int64_t{dec} * h + head) * num_splits;
    float m = -INFINITY;
    for (int s = 0; s < num_splits; ++s) m = fmaxf(m, part_ml[(base + s) * 2]);
    float l = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
        const float ms = part_ml[(base + s) * 2];
        if (ms != -INFINITY) l += part_ml[(base + s) * 2 + 1] * expf(ms - m);
    }
    const float inv = 1.0f / l;
    for (int x = threadIdx.x; x < d; x += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < num_splits; ++s) {
            const float ms = part_ml[(base + s) * 2];
            if (ms != -INFINITY) o += part_o[(base + s) * d + x] * expf(ms - m);
        }
        out[(int64_t{token} * h + head) * d + x] = from_float<T>(o * inv);
    }
}

template <int D>
constexpr size_t prefill_smem_bytes() {
    return sizeof(float) * (kTileRows * (D + 1) + 2 * kKeyTile * (D + 4) + kTileRows * (kKeyTile + 1));
}

// grid (num_prefill_tiles, h_kv), kPrefillThreads threads: rows (token, head of the kv group) of
// one tile, two threads per row (each half of the key tile's scores and half of the output dims).
template <class T, class C, int D>
__global__ void __launch_bounds__(kPrefillThreads) prefill_kernel(const float* q, const C* kv, KvScale kvs, T* out,
                                                                  PagedBatchCuda b,
                                                                  const int32_t* tiles, int tile_tokens, int h,
                                                                  int h_kv, float scale) {
    constexpr int V = kVec<T>;
    constexpr int kHalf = D / 2;
    constexpr int kQStride = D + 1, kKStride = D + 4, kSStride = kKeyTile + 1;
    extern __shared__ float pre_smem[];
    float* qs = pre_smem;                        // [kTileRows][kQStride]
    float* ks = qs + kTileRows * kQStride;       // [kKeyTile][kKStride]
    float* vs = ks + kKeyTile * kKStride;        // [kKeyTile][kKStride]
    float* ss = vs + kKeyTile * kKStride;        // [kTileRows][kSStride]
    const int kh = blockIdx.y, tid = threadIdx.x;
    const int group = h / h_kv;
    const int r = tiles[2 * blockIdx.x], i0 = tiles[2 * blockIdx.x + 1];
    const int past = b.past_len[r], t_start = b.token_start[r];
    const int ntok = min(tile_tokens, b.new_len[r] - i0);
    const int rows = ntok * group;
    const int kmax = past + i0 + ntok;  // keys [0, kmax) are visible to some row of the tile
    const int row = tid / 2, half = tid % 2;
    const bool active = row < rows;
    const int qpos = active ? past + i0 + row / group : -1;  // inactive rows see no key

    for (int idx = tid; idx < rows * D; idx += blockDim.x) {
        const int rr = idx / D, x = idx % D;
        const int token = t_start + i0 + rr / group, head = kh * group + rr % group;
        qs[rr * kQStride + x] = q[(int64_t{token} * h + head) * D + x];
    }
    float acc[kHalf];
#pragma unroll
    for (int x = 0; x < kHalf; ++x) acc[x] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int k0 = 0; k0 < kmax; k0 += kKeyTile) {
        const int nk = min(kKeyTile, kmax - k0);
        __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
        for (int idx = tid; idx < nk * (D / V); idx += blockDim.x) {
            const int j = idx / (D / V), xv = idx % (D / V);
            float f[V];
            load_kv_vec<T>(kv_row(kv, b, r, k0 + j, 0, kh, h_kv, D) + xv * V, f, kvs);
#pragma unroll
            for (int i = 0; i < V; ++i) ks[j * kKStride + xv * V + i] = f[i];
            load_kv_vec<T>(kv_row(kv, b, r, k0 + j, 1, kh, h_kv, D) + xv * V, f, kvs);
#pragma unroll
            for (int i = 0; i < V; ++i) vs[j * kKStride + xv * V + i] = f[i];
        }
        __syncthreads();
        constexpr int kJ = kKeyTile / 2;
        float s[kJ];
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) s[jj] = 0.0f;
        if (active) {
            const float* qrow = qs + row * kQStride;
            for (int x = 0; x < D; x += 4) {
                const float q0 = qrow[x], q1 = qrow[x + 1], q2 = qrow[x + 2], q3 = qrow[x + 3];
#pragma unroll
                for (int jj = 0; jj < kJ; ++jj) {
                    const float4 k4 = *reinterpret_cast<const float4*>(ks + (half * kJ + jj) * kKStride + x);
                    s[jj] += q0 * k4.x + q1 * k4.y + q2 * k4.z + q3 * k4.w;
                }
            }
        }
        float tile_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) {
            const int j = half * kJ + jj;
            s[jj] = (j < nk && k0 + j <= qpos) ? s[jj] * scale : -INFINITY;
            tile_max = fmaxf(tile_max, s[jj]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        const float m_new = fmaxf(m, tile_max);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no visible key yet: keep everything at 0
        const float corr = expf(m - m_use);
        float psum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) {
            const float e = expf(s[jj] - m_use);
            ss[row * kSStride + half * kJ + jj] = e;
            psum += e;
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l = l * corr + psum;
        m = m_new;
        __syncwarp();  // both halves of the row's probabilities are in ss
        if (active) {
#pragma unroll
            for (int x = 0; x < kHalf; ++x) acc[x] *= corr;
            const float* srow = ss + row * kSStride;
            for (int j = 0; j < nk; ++j) {
                const float p = srow[j];
                const float* vrow = vs + j * kKStride + half * kHalf;
#pragma unroll
                for (int x = 0; x < kHalf; x += 4) {
                    const float4 v4 = *reinterpret_cast<const float4*>(vrow + x);
                    acc[x] += p * v4.x;
                    acc[x + 1] += p * v4.y;
                    acc[x + 2] += p * v4.z;
                    acc[x + 3] += p * v4.w;
                }
            }
        }
    }
    if (active) {
        const int token = t_start + i0 + row / group, head = kh * group + row % group;
        T* dst = out + (int64_t{token} * h + head) * D + half * kHalf;
        const float inv = 1.0f / l;
#pragma unroll
        for (int x = 0; x < kHalf; ++x) dst[x] = from_float<T>(acc[x] * inv);
    }
}

template <class T, class C, int D>
void launch_attend(const AttentionWork& w, const PagedBatchCuda& b, const float* q, const C* kv, KvScale kvs, T* out,
                   int h, int h_kv, float scale, float* partial, cudaStream_t stream) {
    const int group = h / h_kv;
    static_assert(kTcRows == kTileRows, "the tensor-core kernel takes the plan's tiles of kTileRows query rows");
    // The tensor-core prefill copies cache tiles as they are (cp.async of T): an FP8 cache takes the
    // CUDA-core prefill, which dequantizes through kv_cache_access.cuh.
    if constexpr (std::is_same_v<C, T> && tc_prefill_supported<T, D>()) {
        if (w.num_prefill_tiles > 0) launch_prefill_tc<T, D>(w, b, q, kv, out, h, h_kv, scale, stream);
    } else if (w.num_prefill_tiles > 0) {
        constexpr size_t smem = prefill_smem_bytes<D>();
        static const bool configured = [] {
            CHECK_CUDA(cudaFuncSetAttribute(prefill_kernel<T, C, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
            return true;
        }();
        (void)configured;
        prefill_kernel<T, C, D><<<dim3(w.num_prefill_tiles, h_kv), kPrefillThreads, smem, stream>>>(
            q, kv, kvs, out, b, w.prefill_tiles, w.tile_tokens, h, h_kv, scale);
        CHECK_LAUNCH("prefill_kernel");
    }
    if (w.num_decode > 0) {
        const size_t smem = sizeof(float) * (size_t{3} * group + size_t{2} * group * D + size_t(group) * kMaxKeysPerSplit +
                                             size_t{decode_red_slots<T, D>()} * kGroupChunk * D);
        static int configured_bytes = 0;
        if (static_cast<int>(smem) > configured_bytes && smem > 48 * 1024) {
            CHECK_CUDA(cudaFuncSetAttribute(decode_kernel<T, C, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
            configured_bytes = static_cast<int>(smem);
        }
        float* part_o = partial;
        float* part_ml = partial + int64_t{w.num_decode} * h * w.num_splits * D;
        decode_kernel<T, C, D><<<dim3(w.num_decode, h_kv, w.num_splits), kDecodeThreads, smem, stream>>>(
            q, kv, kvs, b, w.decode_requests, h, h_kv, scale, w.num_splits, part_o, part_ml, out);
        CHECK_LAUNCH("decode_kernel");
        if (w.num_splits > 1) {
            decode_combine_kernel<T><<<dim3(w.num_decode, h), 128, 0, stream>>>(part_o, part_ml, b, w.decode_requests, h,
                                                                              D, w.num_splits, out);
            CHECK_LAUNCH("decode_combine_kernel");
        }
    }
}


#define TRTLLM_ATTEND_SIGNATURE(T, C, D)                                                                      \
    void launch_attend<T, C, D>(const AttentionWork&, const PagedBatchCuda&, const float*, const C*, KvScale, T*, int, \
                                int, float, float*, cudaStream_t)
#define TRTLLM_INSTANTIATE_ATTEND(T, C)                                                                          \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 8);                                                                   \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 16);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 32);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 64);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 128);                                                                 \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 256);

// In the translation units that call launch_attend without instantiating it.
#define TRTLLM_EXTERN_ATTEND(T, C)                                                                               \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 8);                                                            \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 16);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 32);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 64);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 128);                                                          \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 256);

}  // namespace trtllm::kernels::attn
