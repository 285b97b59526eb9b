// Helpers shared by the CPU kernels in plugins/: row-wise dtype conversion that the compiler
// can vectorize, per-thread scratch, and the small float32 loops every kernel needs.
// Internal to the CPU kernels; the op contracts live in each family's header.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "trtllm/dtype.h"

// The hottest per-task functions are compiled twice, for AVX2 + FMA (x86-64-v3) and for the
// baseline, and the loader picks one (GCC function multi-versioning): the module stays portable
// and modern CPUs get 8-wide FMA loops. Results may differ in the last bits between the two.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TRTLLM_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TRTLLM_CPU_MULTIVERSION
#endif

namespace trtllm::kernels::cpu {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 15;

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// fp16 -> float32 without branches or loops (F. Giesen's "half_to_float_fast"), so a row
// converts with SIMD; dtype.h's fp16_to_float normalizes subnormals in a loop. Exact.
inline float fp16_bits_to_float(uint16_t h) {
    constexpr uint32_t kShiftedExp = 0x7c00u << 13;
    uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
    const uint32_t exp = o & kShiftedExp;
    o += (127u - 15u) << 23;
    const uint32_t inf_nan = o + ((128u - 16u) << 23);
    // Subnormal: let the FPU renormalize by subtracting 2^-14 from 2^-14 * (1 + m / 2^10).
    const uint32_t subnormal = float_bits(bits_float(o + (1u << 23)) - bits_float(113u << 23));
    // Selects as all-ones / all-zeros masks: GCC will not if-convert the nested ?: here.
    const uint32_t is_inf_nan = 0u - static_cast<uint32_t>(exp == kShiftedExp);
    const uint32_t is_subnormal = 0u - static_cast<uint32_t>(exp == 0);
    o = (inf_nan & is_inf_nan) | (subnormal & is_subnormal) | (o & ~(is_inf_nan | is_subnormal));
    return bits_float(o | (static_cast<uint32_t>(h) & 0x8000u) << 16);
}

// float32 -> fp16, round to nearest even, overflow to inf, NaN to quiet NaN; the same results
// as dtype.h's float_to_fp16 (tests check both against numpy), written as selects so it
// vectorizes (F. Giesen's "float_to_half_fast3_rtne").
inline uint16_t float_to_fp16_bits(float f) {
    const uint32_t u_signed = float_bits(f);
    const uint32_t sign = u_signed & 0x80000000u;
    const uint32_t u = u_signed ^ sign;
    const uint32_t inf_nan = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    // Result subnormal or zero: adding 0.5 lines the 10 result bits up at the bottom of the
    // mantissa and the FPU rounds them to nearest even.
    constexpr uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    const uint32_t subnormal = float_bits(bits_float(u) + bits_float(kDenormMagic)) - kDenormMagic;
    const uint32_t normal = (u + ((15u - 127u) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
    const uint32_t is_big = 0u - static_cast<uint32_t>(u >= (143u << 23));
    const uint32_t is_small = 0u - static_cast<uint32_t>(u < (113u << 23));
    const uint32_t o = (inf_nan & is_big) | (subnormal & is_small) | (normal & ~(is_big | is_small));
    return static_cast<uint16_t>(o | (sign >> 16));
}

// float32 -> bf16, round to nearest even, NaN stays a (quiet) NaN; as dtype.h's float_to_bf16
// but with the NaN case as a select.
inline uint16_t float_to_bf16_bits(float f) {
    const uint32_t u = float_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

inline void check_float_dtype(DType dt) {
    if (dt != DType::kFloat32 && dt != DType::kBFloat16 && dt != DType::kFloat16) {
        throw std::invalid_argument(std::string("expected a float activation dtype (float32, bfloat16, float16), got ") +
                                    dtype_name(dt));
    }
}

inline const void* elem_ptr(const void* base, DType dt, int64_t index) {
    return static_cast<const char*>(base) + index * static_cast<int64_t>(dtype_size(dt));
}

inline void* elem_ptr(void* base, DType dt, int64_t index) {
    return static_cast<char*>(base) + index * static_cast<int64_t>(dtype_size(dt));
}

// dst[0..n) = float32(src[0..n)); src is `n` elements of `dt`.
inline void load_row(const void* src, DType dt, int64_t n, float* dst) {
    switch (dt) {
        case DType::kFloat32:
            std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        case DType::kBFloat16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bits_float(static_cast<uint32_t>(s[i]) << 16);
            return;
        }
        case DType::kFloat16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_bits_to_float(s[i]);
            return;
        }
        default:
            check_float_dtype(dt);
    }
}

// dst[0..n) = round(src[0..n)) to `dt`.
inline void store_row(const float* src, DType dt, int64_t n, void* dst) {
    switch (dt) {
        case DType::kFloat32:
            std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        case DType::kBFloat16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16_bits(src[i]);
            return;
        }
        case DType::kFloat16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_fp16_bits(src[i]);
            return;
        }
        default:
            check_float_dtype(dt);
    }
}

// v = round(v) in place: what a float32 value reads back as after a store in `dt`.
inline void round_row(float* v, DType dt, int64_t n) {
    if (dt == DType::kBFloat16) {
        for (int64_t i = 0; i < n; ++i) v[i] = bits_float(static_cast<uint32_t>(float_to_bf16_bits(v[i])) << 16);
    } else if (dt == DType::kFloat16) {
        for (int64_t i = 0; i < n; ++i) v[i] = fp16_bits_to_float(float_to_fp16_bits(v[i]));
    }
}

// A per-thread buffer of at least n floats, reused across calls: kernels run for every layer of
// every iteration, and fresh large allocations would page-fault each time. Each call site owns
// its own thread_local vector, so two live buffers never alias.
inline float* grow(std::vector<float>& buf, int64_t n) {
    if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
    return buf.data();
}

// Sums of products over 16 independent lanes, then the lanes: the compiler vectorizes the
// lanes without reassociating anything (no -ffast-math), the lanes hide the add latency, and the
// summation order is fixed, so results do not depend on the vector width.
constexpr int kLanes = 16;

inline float sum_lanes(const float* lanes) {
    float s = 0.0f;
    for (int j = 0; j < kLanes; ++j) s += lanes[j];
    return s;
}

inline float dot(const float* a, const float* b, int64_t n) {
    float lanes[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) lanes[j] += a[i + j] * b[i + j];
    }
    for (int j = 0; i + j < n; ++j) lanes[j] += a[i + j] * b[i + j];
    return sum_lanes(lanes);
}

inline float sum_squares(const float* a, int64_t n) { return dot(a, a, n); }

// RMSNorm of one slice in place (weight already float32): v * rsqrt(mean(v^2) + eps) * w,
// multiplied in that order as Hugging Face does.
inline void rms_norm_inplace(float* v, const float* w, int64_t n, float eps) {
    const float inv = 1.0f / std::sqrt(sum_squares(v, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] * inv * w[i];
}

}  // namespace trtllm::kernels::cpu
