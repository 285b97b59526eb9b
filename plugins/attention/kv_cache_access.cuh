// How attention kernels write and read one element type of the paged KV cache: the activation
// dtype T itself, or FP8 E4M3 (op set v2's FP8 KV cache, docs/opset.md). A kernel templated on the
// cache type C calls store_kv / load_kv_vec and never looks at the bytes itself, so every attention
// kernel (decode, prefill, and any other reading the same cache) shares the FP8 numerics:
//   write: Q(x, s) = cvt.rn.satfinite.e4m3(fl(x * fl(1 / s)))   (inv_scale = 1 / s computed on the host)
//   read:  fl(float(q) * s)
// For C == T the scales are ignored and the values round to T as before.
#pragma once

#include <cuda_fp8.h>

#include <type_traits>

#include "cuda_common.cuh"

namespace trtllm::kernels::attn {

using Fp8KvCache = __nv_fp8_e4m3;

template <class C>
constexpr bool kIsFp8Kv = std::is_same_v<C, Fp8KvCache>;

// The dequantization / quantization scales of one layer's cache (1 for an activation-dtype cache).
struct KvScale {
    float scale = 1.0f;
    float inv_scale = 1.0f;
};

template <class C>
__device__ __forceinline__ void store_kv(C* dst, float x, KvScale s) {
    if constexpr (kIsFp8Kv<C>) {
        dst->__x = __nv_cvt_float_to_fp8(__fmul_rn(x, s.inv_scale), __NV_SATFINITE, __NV_E4M3);
    } else {
        *dst = cuda::from_float<C>(x);
    }
}

// The raw bytes of one V = kVec<T> element vector of the cache: 16 bytes of T, or V bytes of FP8.
template <class T, class C>
using KvRaw = std::conditional_t<!kIsFp8Kv<C>, uint4, std::conditional_t<cuda::kVec<T> == 8, uint2, uint32_t>>;

// The vector at p[0..V), V = kVec<T>, as it is stored (a kernel that keeps several rows' loads in
// flight holds them in this form: half the registers of float32 or less). p is V-element aligned. A
// plain (coherent) load on purpose: the decode kernel reads back a key its own block wrote in the
// same launch, so never the read-only path (__ldg, ld.global.nc, __restrict__ on the cache pointer).
template <class T, class C>
__device__ __forceinline__ KvRaw<T, C> load_kv_raw(const C* p) {
    static_assert(kIsFp8Kv<C> || std::is_same_v<C, T>, "an unquantized cache holds the activation dtype");
    static_assert(!kIsFp8Kv<C> || cuda::kVec<T> == 8 || cuda::kVec<T> == 4, "FP8 KV vectors are 8 or 4 bytes");
    return *reinterpret_cast<const KvRaw<T, C>*>(p);
}

// f[0..V) = a loaded vector's values as float32.
template <class T, class C>
__device__ __forceinline__ void kv_raw_to_float(const KvRaw<T, C>& raw, float (&f)[cuda::kVec<T>], KvScale s) {
    constexpr int V = cuda::kVec<T>;
    if constexpr (kIsFp8Kv<C>) {
        uint32_t words[V / 4];
        if constexpr (V == 8) {
            words[0] = raw.x;
            words[V / 4 - 1] = raw.y;
        } else {
            words[0] = raw;
        }
#pragma unroll
        for (int w = 0; w < V / 4; ++w) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const __half2_raw pair = __nv_cvt_fp8x2_to_halfraw2(
                    static_cast<__nv_fp8x2_storage_t>(words[w] >> (16 * h)), __NV_E4M3);  // exact
                const float2 v = __half22float2(*reinterpret_cast<const __half2*>(&pair));
                f[4 * w + 2 * h] = __fmul_rn(v.x, s.scale);
                f[4 * w + 2 * h + 1] = __fmul_rn(v.y, s.scale);
            }
        }
    } else {
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < V; ++i) f[i] = cuda::to_float(e[i]);
    }
}

// f[0..V) = the cached values at p[0..V) as float32, V = kVec<T>.
template <class T, class C>
__device__ __forceinline__ void load_kv_vec(const C* p, float (&f)[cuda::kVec<T>], KvScale s) {
    kv_raw_to_float<T, C>(load_kv_raw<T>(p), f, s);
}

}  // namespace trtllm::kernels::attn
