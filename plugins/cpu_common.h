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
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_float(s[i]);
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
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
            return;
        }
        case DType::kFloat16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_fp16(src[i]);
            return;
        }
        default:
            check_float_dtype(dt);
    }
}

// v = round(v) in place: what a float32 value reads back as after a store in `dt`.
inline void round_row(float* v, DType dt, int64_t n) {
    if (dt == DType::kBFloat16) {
        for (int64_t i = 0; i < n; ++i) v[i] = bits_float(static_cast<uint32_t>(float_to_bf16(v[i])) << 16);
    } else if (dt == DType::kFloat16) {
        for (int64_t i = 0; i < n; ++i) v[i] = fp16_to_float(float_to_fp16(v[i]));
    }
}

// A per-thread buffer of at least n floats, reused across calls: kernels run for every layer of
// every iteration, and fresh large allocations would page-fault each time. Each call site owns
// its own thread_local vector, so two live buffers never alias.
inline float* grow(std::vector<float>& buf, int64_t n) {
    if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
    return buf.data();
}

// fn(row, r) for each row r of x [rows, cols] (dtype dt), loaded into float32 scratch of the
// calling thread; rows in parallel where there is enough work. The row is fn's to change.
template <class Fn>
void for_each_row(const void* x, DType dt, int64_t rows, int64_t cols, const Fn& fn) {
#pragma omp parallel if (rows * cols > kParallelMinElements)
    {
        thread_local std::vector<float> row_buf;
        float* row = grow(row_buf, cols);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            load_row(elem_ptr(x, dt, r * cols), dt, cols, row);
            fn(row, r);
        }
    }
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
