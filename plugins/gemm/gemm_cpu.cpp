// CPU GEMM for `linear`, reading the weights in their stored dtype.
//
// Decode-sized batches (m <= kSmallM) are memory bound: every weight is used m times, so the
// kernel streams the weights once, widening bf16/fp16 to float32 in registers, and keeps x in
// cache (AVX2 + FMA, picked at run time). Larger m is compute bound: weight blocks are widened
// into a cache-sized float32 scratch and handed to OpenBLAS sgemm, which packs and tiles them.
#include "gemm/gemm.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"

namespace trtllm::kernels {
namespace {

constexpr int64_t kSmallM = 32;     // at or below: the streaming kernel
constexpr int64_t kRowBlock = 256;  // rows of x converted per block (bounds the scratch)
constexpr int64_t kWeightBlock = 128;  // weight rows widened per sgemm call: 128 x k float32 stays in L2

void check_blas_dim(int64_t v, const char* name) {
    // cblas takes 32-bit ints (blasint) in the LP64 OpenBLAS builds distributions ship.
    if (v < 0 || v > INT_MAX) {
        throw std::invalid_argument(std::string("gemm: ") + name + " = " + std::to_string(v) +
                                    " is outside [0, 2^31)");
    }
}

bool has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                            __builtin_cpu_supports("f16c");
    return yes;
}

// 8 consecutive weights widened to float32.
template <DType W>
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const void* base, int64_t index) {
    if constexpr (W == DType::kFloat32) {
        return _mm256_loadu_ps(static_cast<const float*>(base) + index);
    } else if constexpr (W == DType::kBFloat16) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + index));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + index));
        return _mm256_cvtph_ps(h);
    }
}

__attribute__((target("avx2,fma,f16c"))) inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

float weight_at(const void* w, DType dt, int64_t index) { return load_float(w, dt, index); }

// y[m, n0:n1] = x[m, k] . W[n0:n1, k]^T (+ bias), float32 x and y. Tiles of 4 x rows by 2
// weight rows: 8 accumulators, 2 weight and 1 x register, no spills; the two weight rows stay
// in L1 while every x row passes over them.
template <DType W>
__attribute__((target("avx2,fma,f16c"))) void small_m_tile(const float* x, int64_t m, const GemmWeightCpu& w, int64_t n0,
                                                      int64_t n1, float* y) {
    const int64_t k = w.k, k8 = k / 8 * 8;
    for (int64_t n = n0; n < n1; n += 2) {
        const int64_t nr = std::min<int64_t>(2, n1 - n);
        const int64_t row1 = nr == 2 ? n + 1 : n;  // a lone last row pairs with itself
        for (int64_t i0 = 0; i0 < m; i0 += 4) {
            const int64_t mr = std::min<int64_t>(4, m - i0);
            __m256 acc[4][2];
            for (auto& a : acc) a[0] = a[1] = _mm256_setzero_ps();
            const float* xr[4];
            for (int i = 0; i < 4; ++i) xr[i] = x + (i0 + std::min<int64_t>(i, mr - 1)) * k;
            for (int64_t kk = 0; kk < k8; kk += 8) {
                const __m256 w0 = load8<W>(w.weight, n * k + kk);
                const __m256 w1 = load8<W>(w.weight, row1 * k + kk);
                for (int i = 0; i < 4; ++i) {
                    const __m256 xv = _mm256_loadu_ps(xr[i] + kk);
                    acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
                }
            }
            for (int64_t i = 0; i < mr; ++i) {
                for (int64_t j = 0; j < nr; ++j) {
                    float sum = hsum(acc[i][j]);
                    for (int64_t kk = k8; kk < k; ++kk) sum += xr[i][kk] * weight_at(w.weight, W, (n + j) * k + kk);
                    y[(i0 + i) * w.n + n + j] = sum + (w.bias.empty() ? 0.0f : w.bias[static_cast<size_t>(n + j)]);
                }
            }
        }
    }
}

template <DType W>
void small_m(const float* x, int64_t m, const GemmWeightCpu& w, float* y) {
    constexpr int64_t kTile = 64;  // weight rows per task
    const int64_t tiles = (w.n + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (w.n * w.k > cpu::kParallelMinElements)
    for (int64_t t = 0; t < tiles; ++t) {
        small_m_tile<W>(x, m, w, t * kTile, std::min(w.n, (t + 1) * kTile), y);
    }
}

// y[rows, n] = x . W^T (+ bias) through sgemm, widening kWeightBlock weight rows at a time.
void large_m(const float* x, int64_t rows, const GemmWeightCpu& w, float* y) {
    float beta = 0.0f;
    if (!w.bias.empty()) {  // the bias goes in as C with beta = 1: y is rounded once
        for (int64_t i = 0; i < rows; ++i) std::memcpy(y + i * w.n, w.bias.data(), static_cast<size_t>(w.n) * 4);
        beta = 1.0f;
    }
    if (w.weight_dtype == DType::kFloat32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(w.n),
                    static_cast<int>(w.k), 1.0f, x, static_cast<int>(w.k), static_cast<const float*>(w.weight),
                    static_cast<int>(w.k), beta, y, static_cast<int>(w.n));
        return;
    }
    thread_local std::vector<float> block;
    float* wf = cpu::grow(block, kWeightBlock * w.k);
    for (int64_t n0 = 0; n0 < w.n; n0 += kWeightBlock) {
        const int64_t nb = std::min(kWeightBlock, w.n - n0);
        cpu::load_row(cpu::elem_ptr(w.weight, w.weight_dtype, n0 * w.k), w.weight_dtype, nb * w.k, wf);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(nb),
                    static_cast<int>(w.k), 1.0f, x, static_cast<int>(w.k), wf, static_cast<int>(w.k), beta, y + n0,
                    static_cast<int>(w.n));
    }
}

void multiply(const float* x, int64_t rows, const GemmWeightCpu& w, float* y) {
    if (rows <= kSmallM && has_avx2_fma()) {
        switch (w.weight_dtype) {
            case DType::kFloat32: return small_m<DType::kFloat32>(x, rows, w, y);
            case DType::kBFloat16: return small_m<DType::kBFloat16>(x, rows, w, y);
            case DType::kFloat16: return small_m<DType::kFloat16>(x, rows, w, y);
            default: break;
        }
    }
    large_m(x, rows, w, y);
}

}  // namespace

GemmWeightCpu prepare_gemm_weight_cpu(const void* weight, DType weight_dtype, int64_t n, int64_t k,
                                      const void* bias) {
    cpu::check_float_dtype(weight_dtype);
    check_blas_dim(n, "n");
    check_blas_dim(k, "k");
    if (n * k > 0 && weight == nullptr) throw std::invalid_argument("gemm: weight is null");
    GemmWeightCpu w;
    w.n = n;
    w.k = k;
    w.weight = weight;
    w.weight_dtype = weight_dtype;
    if (bias != nullptr) {
        w.bias.resize(static_cast<size_t>(n));
        cpu::load_row(bias, weight_dtype, n, w.bias.data());
    }
    return w;
}

void gemm_cpu(const void* x, DType x_dtype, const GemmWeightCpu& w, void* y, DType y_dtype, int64_t m) {
    cpu::check_float_dtype(x_dtype);
    cpu::check_float_dtype(y_dtype);
    check_blas_dim(m, "m");
    if (m == 0 || w.n == 0) return;
    if (w.k == 0) {
        std::vector<float> row(static_cast<size_t>(w.n), 0.0f);
        if (!w.bias.empty()) row = w.bias;
        for (int64_t i = 0; i < m; ++i) cpu::store_row(row.data(), y_dtype, w.n, cpu::elem_ptr(y, y_dtype, i * w.n));
        return;
    }
    const bool convert_x = x_dtype != DType::kFloat32, convert_y = y_dtype != DType::kFloat32;
    thread_local std::vector<float> x_buf, y_buf;
    for (int64_t row0 = 0; row0 < m; row0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, m - row0);
        const float* xf = static_cast<const float*>(x) + row0 * w.k;
        if (convert_x) {
            float* buf = cpu::grow(x_buf, rows * w.k);
            cpu::load_row(cpu::elem_ptr(x, x_dtype, row0 * w.k), x_dtype, rows * w.k, buf);
            xf = buf;
        }
        float* yf = convert_y ? cpu::grow(y_buf, rows * w.n) : static_cast<float*>(y) + row0 * w.n;
        multiply(xf, rows, w, yf);
        if (convert_y) cpu::store_row(yf, y_dtype, rows * w.n, cpu::elem_ptr(y, y_dtype, row0 * w.n));
    }
}

}  // namespace trtllm::kernels
