// CPU GEMM for `linear`: OpenBLAS sgemm over float32 copies of the operands.
#include "gemm/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"

namespace trtllm::kernels {
namespace {

void convert_to_float(const void* src, DType dt, int64_t n, float* dst) {
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMinElements)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * kChunk;
        cpu::load_row(cpu::elem_ptr(src, dt, begin), dt, std::min(kChunk, n - begin), dst + begin);
    }
}

void convert_from_float(const float* src, DType dt, int64_t n, void* dst) {
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMinElements)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * kChunk;
        cpu::store_row(src + begin, dt, std::min(kChunk, n - begin), cpu::elem_ptr(dst, dt, begin));
    }
}

void check_blas_dim(int64_t v, const char* name) {
    // cblas takes 32-bit ints (blasint) in the LP64 OpenBLAS builds distributions ship.
    if (v < 0 || v > INT_MAX) {
        throw std::invalid_argument(std::string("gemm: ") + name + " = " + std::to_string(v) +
                                    " is outside [0, 2^31)");
    }
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
    w.weight.resize(static_cast<size_t>(n * k));
    convert_to_float(weight, weight_dtype, n * k, w.weight.data());
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
    // 16-bit operands go through float32 scratch a block of rows at a time, so the scratch stays
    // a few MB at prefill sizes; sgemm on 256 rows is as fast per row as on all of them (B is
    // re-packed per block: n * k work against 256 * n * k).
    constexpr int64_t kRowBlock = 256;
    const bool convert_x = x_dtype != DType::kFloat32, convert_y = y_dtype != DType::kFloat32;
    thread_local std::vector<float> x_buf, y_buf;
    for (int64_t row0 = 0; row0 < m; row0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, m - row0);
        const float* xf = static_cast<const float*>(x) + row0 * w.k;
        if (convert_x) {
            float* buf = cpu::grow(x_buf, rows * w.k);
            convert_to_float(cpu::elem_ptr(x, x_dtype, row0 * w.k), x_dtype, rows * w.k, buf);
            xf = buf;
        }
        float* yf = convert_y ? cpu::grow(y_buf, rows * w.n) : static_cast<float*>(y) + row0 * w.n;
        // The bias goes in as C with beta = 1, so y is rounded once, after bias and product.
        float beta = 0.0f;
        if (!w.bias.empty()) {
            for (int64_t i = 0; i < rows; ++i) std::memcpy(yf + i * w.n, w.bias.data(), static_cast<size_t>(w.n) * 4);
            beta = 1.0f;
        }
        if (w.k == 0) {
            if (w.bias.empty()) std::fill(yf, yf + rows * w.n, 0.0f);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(w.n),
                        static_cast<int>(w.k), 1.0f, xf, static_cast<int>(w.k), w.weight.data(), static_cast<int>(w.k),
                        beta, yf, static_cast<int>(w.n));
        }
        if (convert_y) convert_from_float(yf, y_dtype, rows * w.n, cpu::elem_ptr(y, y_dtype, row0 * w.n));
    }
}

}  // namespace trtllm::kernels
