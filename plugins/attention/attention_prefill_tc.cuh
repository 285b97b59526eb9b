// Tensor-core prefill attention (FlashAttention-2 style) for bf16/fp16 activations and head_dim
// 64 or 128: the prefill step of attention_cuda for those, on mma.sync.m16n8k16 with fp32
// accumulation. Included by attention_kernels.cuh; the CUDA-core prefill kernel there stays for
// float32 and other head dims.
//
// A block takes one prefill tile (kTileRows query rows = tile_tokens tokens x the group's query
// heads, so the heads sharing a kv head share every K/V tile) against 64-key tiles of that kv
// head, read through the block table with cp.async into a two-stage shared-memory ring: the next
// tile loads while this one is multiplied. Each of the 4 warps owns 16 query rows: S = Q·Kᵀ and
// O += P·V run on tensor cores, the online softmax (running max, sum) stays in fp32 registers.
// Rounding: q (fp32 after RoPE) is rounded once to the activation dtype for Q·Kᵀ, and the
// probabilities P are rounded to it for P·V; the softmax denominator sums the rounded P, so
// every row is an exact weighted mean of V with slightly perturbed weights.
//
// An FP8 cache (C = Fp8KvCache): a tile's bytes land by cp.async in a staging ring beside the
// T tiles and are widened to T in shared memory before its mmas. E4M3 values are exact in bf16
// and fp16, and the cache's one scale s (keys and values alike) stays out of the mmas: Q·(s K)ᵀ =
// s (Q·Kᵀ) goes into the scores' scale, P·(s V) = s (P·V) into the output's 1 / l. So the FP8
// cache adds no rounding to the tensor-core path's two (the CUDA-core prefill, which it replaces
// for these dtypes, rounded each s·k to float32).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "attention/attention_cuda.h"
#include "attention/kv_cache_access.cuh"
#include "cuda_common.cuh"

namespace trtllm::kernels::attn {

using namespace cuda;

constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcRows = kTcWarps * 16;  // query rows per block: one m16 slice per warp
constexpr int kTcKeys = 64;             // keys per K/V tile
constexpr float kLog2e = 1.4426950408889634f;

// The row of k (which = 0) or v (which = 1) of position `pos` of request r (attention_kernels.cuh).
template <class T>
__device__ __forceinline__ T* kv_row(T* kv, const PagedBatchCuda& b, int r, int pos, int which, int kh, int h_kv, int d);

template <class T, int D>
constexpr bool tc_prefill_supported() {
    return (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) && (D == 64 || D == 128);
}

// Shared-memory row stride in elements: 16 bytes of padding put the 8 rows an ldmatrix reads in
// 8 different groups of 4 banks (row stride = 4 banks mod 32), so it runs without conflicts.
template <int D>
constexpr int tc_stride() {
    return D + 8;
}

// Stages of K and V tiles in T: a T cache's two-stage cp.async ring; an FP8 cache's ring is of its
// bytes, and each tile is widened into one T stage just before its mmas (the iteration before ended
// at a barrier, so nobody still reads it). One stage keeps the FP8 kernel at 83 KB for head_dim
// 128, under sm_89's 99 KB a block and two blocks an SM on an H100 (two T stages: 117 KB, one).
template <class C>
constexpr int tc_t_stages() {
    return kIsFp8Kv<C> ? 1 : 2;
}

// Q [kTcRows] + K and V [tc_t_stages][kTcKeys] rows of 16-bit elements; for an FP8 cache also its
// K and V staging [2 stages][kTcKeys] rows of D bytes.
template <class C, int D>
constexpr size_t tc_smem_bytes() {
    return sizeof(uint16_t) * tc_stride<D>() * (kTcRows + 2 * tc_t_stages<C>() * kTcKeys) +
           (kIsFp8Kv<C> ? 2 * 2 * kTcKeys * D : 0);
}

// Eight E4M3 codes widened to T, exactly (every E4M3 value is a bf16 and an fp16 value).
template <class T>
__device__ __forceinline__ uint4 widen_fp8x8(uint2 raw) {
    const uint32_t words[2] = {raw.x, raw.y};
    uint32_t out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const __half2_raw pair =
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i / 2] >> (16 * (i % 2))), __NV_E4M3);
        if constexpr (std::is_same_v<T, __half>) {
            out[i] = static_cast<uint32_t>(pair.x) | (static_cast<uint32_t>(pair.y) << 16);
        } else {
            const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&pair));
            const __nv_bfloat162 v = __floats2bfloat162_rn(f.x, f.y);
            memcpy(&out[i], &v, sizeof(out[i]));
        }
    }
    return make_uint4(out[0], out[1], out[2], out[3]);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; `valid` false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `N` committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 matrices of 16-bit elements; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// c[16x8] += a[16x16] · b[16x8], fp32 accumulators (PTX ISA fragment layouts for m16n8k16).
template <class T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// Two floats rounded to T in one 32-bit register, `lo` in the low half (the lower column).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    uint32_t u;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        memcpy(&u, &v, sizeof(u));
    } else {
        const __half2 v = __floats2half2_rn(lo, hi);
        memcpy(&u, &v, sizeof(u));
    }
    return u;
}

template <class T>
__device__ __forceinline__ float round_to(float x) {
    return to_float(from_float<T>(x));
}

// grid (num_prefill_tiles, h_kv), kTcThreads threads, tc_smem_bytes<C, D>() dynamic shared memory.
// Fragment coordinates (PTX m16n8k16): lane = 4 g + t holds accumulator rows g and g + 8,
// columns 2t and 2t + 1 of each 8-column n-tile. scale_log2 includes an FP8 cache's scale;
// out_scale is that scale (1 for a T cache).
template <class T, class C, int D>
__global__ void __launch_bounds__(kTcThreads) prefill_tc_kernel(const float* q, const C* kv, T* out, PagedBatchCuda b,
                                                                const int32_t* tiles, int tile_tokens, int h,
                                                                int h_kv, float scale_log2, float out_scale) {
    constexpr int S = tc_stride<D>();
    constexpr int kChunks = D / 8;  // 16-byte chunks per row
    constexpr int kKSteps = D / 16;
    constexpr int kKeyNTiles = kTcKeys / 8;
    constexpr int kDimNTiles = D / 8;
    extern __shared__ __align__(16) unsigned char tc_smem[];
    T* qs = reinterpret_cast<T*>(tc_smem);  // [kTcRows][S]
    constexpr int kTStages = tc_t_stages<C>();
    T* ks = qs + kTcRows * S;                // [kTStages][kTcKeys][S]
    T* vs = ks + kTStages * kTcKeys * S;     // [kTStages][kTcKeys][S]
    uint8_t* k8 = reinterpret_cast<uint8_t*>(vs + kTStages * kTcKeys * S);  // FP8 cache: [2][kTcKeys][D] bytes
    uint8_t* v8 = k8 + 2 * kTcKeys * D;                                      // the same for V

    const int kh = blockIdx.y;
    const int tile = gridDim.x - 1 - blockIdx.x;  // the plan lists tiles by position: start the longest first
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int group = h / h_kv;
    const int r = tiles[2 * tile], i0 = tiles[2 * tile + 1];
    const int past = b.past_len[r], t_start = b.token_start[r];
    const int ntok = min(tile_tokens, b.new_len[r] - i0);
    const int rows = ntok * group;
    const int kmax = past + i0 + ntok;  // keys [0, kmax) are visible to some row of the tile
    const int num_key_tiles = (kmax + kTcKeys - 1) / kTcKeys;

    auto load_kv_tile = [&](int kt, int stage) {
        const int k0 = kt * kTcKeys;
        if constexpr (kIsFp8Kv<C>) {  // the bytes, to the staging ring
            constexpr int kChunks8 = D / 16;
            uint8_t* kdst = k8 + stage * kTcKeys * D;
            uint8_t* vdst = v8 + stage * kTcKeys * D;
            for (int idx = tid; idx < kTcKeys * kChunks8; idx += kTcThreads) {
                const int j = idx / kChunks8, c = (idx % kChunks8) * 16;
                const bool valid = k0 + j < kmax;  // zero codes past the last key, as below
                const int pos = valid ? k0 + j : 0;
                cp_async_16(kdst + j * D + c, reinterpret_cast<const uint8_t*>(kv_row(kv, b, r, pos, 0, kh, h_kv, D)) + c,
                            valid);
                cp_async_16(vdst + j * D + c, reinterpret_cast<const uint8_t*>(kv_row(kv, b, r, pos, 1, kh, h_kv, D)) + c,
                            valid);
            }
        } else {
            T* kdst = ks + stage * kTcKeys * S;
            T* vdst = vs + stage * kTcKeys * S;
            for (int idx = tid; idx < kTcKeys * kChunks; idx += kTcThreads) {
                const int j = idx / kChunks, c = (idx % kChunks) * 8;
                const bool valid = k0 + j < kmax;  // rows past the last key are zeros: 0 · V must not meet NaN garbage
                const int pos = valid ? k0 + j : 0;
                cp_async_16(kdst + j * S + c, kv_row(kv, b, r, pos, 0, kh, h_kv, D) + c, valid);
                cp_async_16(vdst + j * S + c, kv_row(kv, b, r, pos, 1, kh, h_kv, D) + c, valid);
            }
        }
        cp_async_commit();
    };
    load_kv_tile(0, 0);

    // Q rows (token, head of the group), rounded to T; rows past the tile's end are zeros.
    for (int idx = tid; idx < kTcRows * (D / 4); idx += kTcThreads) {
        const int rr = idx / (D / 4), x = (idx % (D / 4)) * 4;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (rr < rows) {
            const int token = t_start + i0 + rr / group, head = kh * group + rr % group;
            v = *reinterpret_cast<const float4*>(q + (int64_t{token} * h + head) * D + x);
        }
        *reinterpret_cast<uint2*>(qs + rr * S + x) = make_uint2(pack2<T>(v.x, v.y), pack2<T>(v.z, v.w));
    }
    __syncthreads();
    uint32_t qf[kKSteps][4];  // A fragments of this warp's 16 rows
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
        const int row = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
        ldmatrix_x4(qf[kk], qs + row * S + kk * 16 + (lane / 16) * 8);
    }

    const int g = lane / 4, t = lane % 4;
    int qpos[2];  // positions of this thread's rows g and g + 8; -1 (no key visible) past the tile's rows
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int row = warp * 16 + g + 8 * i;
        qpos[i] = row < rows ? past + i0 + row / group : -1;
    }
    float o[kDimNTiles][4];
#pragma unroll
    for (int n = 0; n < kDimNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
    }
    float m[2] = {-INFINITY, -INFINITY};  // running max of the log2-scaled scores
    float l[2] = {0.0f, 0.0f};            // this thread's part of the running sum (quad-summed at the end)

    for (int kt = 0; kt < num_key_tiles; ++kt) {
        const int stage = kt & 1;
        if (kt + 1 < num_key_tiles) {
            load_kv_tile(kt + 1, stage ^ 1);  // that stage was consumed before the previous iteration's last barrier
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // every thread's copies of this stage have landed
        const T* kst = ks + (kTStages == 1 ? 0 : stage) * kTcKeys * S;
        const T* vst = vs + (kTStages == 1 ? 0 : stage) * kTcKeys * S;
        if constexpr (kIsFp8Kv<C>) {  // the staged bytes widened into the one T stage
            constexpr int kVecs = D / 8;  // 8 codes a thread at a time
            for (int idx = tid; idx < 2 * kTcKeys * kVecs; idx += kTcThreads) {
                const int which = idx / (kTcKeys * kVecs), j = idx % (kTcKeys * kVecs) / kVecs, c = idx % kVecs * 8;
                const uint8_t* src = (which == 0 ? k8 : v8) + (stage * kTcKeys + j) * D + c;
                T* dst = (which == 0 ? ks : vs) + j * S + c;
                *reinterpret_cast<uint4*>(dst) = widen_fp8x8<T>(*reinterpret_cast<const uint2*>(src));
            }
            __syncthreads();
        }

        float s[kKeyNTiles][4];
#pragma unroll
        for (int n = 0; n < kKeyNTiles; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
            for (int n = 0; n < kKeyNTiles; n += 2) {
                // Matrices: keys of n-tile n at dims kk*16 + {0, 8}, then of n-tile n + 1.
                uint32_t kb[4];
                const int key = n * 8 + (lane % 8) + (lane / 16) * 8;
                ldmatrix_x4(kb, kst + key * S + kk * 16 + ((lane / 8) % 2) * 8);
                mma_16816<T>(s[n], qf[kk], kb[0], kb[1]);
                mma_16816<T>(s[n + 1], qf[kk], kb[2], kb[3]);
            }
        }

        const int k0 = kt * kTcKeys;
        const bool needs_mask = k0 + kTcKeys - 1 > past + i0;  // some key is past some row's position (or kmax)
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < kKeyNTiles; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + n * 8 + 2 * t + (e & 1);
                s[n][e] = (!needs_mask || key <= qpos[e / 2]) ? s[n][e] * scale_log2 : -INFINITY;
                tile_max[e / 2] = fmaxf(tile_max[e / 2], s[n][e]);
            }
        }
        float m_use[2], corr[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
            tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
            const float m_new = fmaxf(m[i], tile_max[i]);
            m_use[i] = m_new == -INFINITY ? 0.0f : m_new;  // no visible key yet: everything stays 0
            corr[i] = exp2f(m[i] - m_use[i]);
            m[i] = m_new;
            l[i] *= corr[i];
        }
#pragma unroll
        for (int n = 0; n < kKeyNTiles; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = round_to<T>(exp2f(s[n][e] - m_use[e / 2]));  // P as the mma will see it
                l[e / 2] += s[n][e];
            }
        }
#pragma unroll
        for (int n = 0; n < kDimNTiles; ++n) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
#pragma unroll
        for (int kk = 0; kk < kTcKeys / 16; ++kk) {
            // The S accumulators of key n-tiles 2kk and 2kk+1 are the A fragment of keys kk*16..+15.
            uint32_t pa[4];
            pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < kDimNTiles; n += 2) {
                // Transposed matrices: keys kk*16 + {0, 8} of dims n*8, then of dims (n + 1)*8.
                uint32_t vb[4];
                const int key = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
                ldmatrix_x4_trans(vb, vst + key * S + n * 8 + (lane / 16) * 8);
                mma_16816<T>(o[n], pa, vb[0], vb[1]);
                mma_16816<T>(o[n + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads();  // this stage is consumed: the next iteration may load into it
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        const int row = warp * 16 + g + 8 * i;
        if (row >= rows) continue;
        const int token = t_start + i0 + row / group, head = kh * group + row % group;
        T* dst = out + (int64_t{token} * h + head) * D + 2 * t;
        const float inv = out_scale / l[i];  // l > 0: key 0 is visible to every row
#pragma unroll
        for (int n = 0; n < kDimNTiles; ++n) {
            *reinterpret_cast<uint32_t*>(dst + n * 8) = pack2<T>(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
        }
    }
}

template <class T, class C, int D>
void launch_prefill_tc(const AttentionWork& w, const PagedBatchCuda& b, const float* q, const C* kv, KvScale kvs, T* out,
                       int h, int h_kv, float scale, cudaStream_t stream) {
    constexpr size_t smem = tc_smem_bytes<C, D>();
    static const bool configured = [] {
        CHECK_CUDA(cudaFuncSetAttribute(prefill_tc_kernel<T, C, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
        return true;
    }();
    (void)configured;
    const float cache_scale = kIsFp8Kv<C> ? kvs.scale : 1.0f;
    prefill_tc_kernel<T, C, D><<<dim3(w.num_prefill_tiles, h_kv), kTcThreads, smem, stream>>>(
        q, kv, out, b, w.prefill_tiles, w.tile_tokens, h, h_kv, scale * kLog2e * cache_scale, cache_scale);
    CHECK_LAUNCH("prefill_tc_kernel");
}

}  // namespace trtllm::kernels::attn
