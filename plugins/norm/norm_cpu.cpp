// CPU RMSNorm / LayerNorm: each row to float32 scratch, normalized, rounded back once.
#include "norm/norm.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"

namespace trtllm::kernels {
namespace {

void check_shape(int64_t rows, int64_t dim) {
    if (rows < 0 || dim <= 0) {
        throw std::invalid_argument("norm: need rows >= 0 and dim > 0, got rows=" + std::to_string(rows) +
                                    " dim=" + std::to_string(dim));
    }
}

// (v - mean) * rsqrt(var + eps) * w + b over one row in place; biased variance, two passes.
void layer_norm_inplace(float* v, const float* w, const float* b, int64_t n, float eps) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += v[i];
    const float mean = sum / static_cast<float>(n);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) sq += (v[i] - mean) * (v[i] - mean);
    const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) v[i] = (v[i] - mean) * inv * w[i] + b[i];
}

// sum = round(a + b) stored, and left in `acc` as the rounded values the norm must read.
void add_rows_rounded(const void* a, const void* b, void* sum, DType dt, int64_t dim, float* acc, float* tmp) {
    cpu::load_row(a, dt, dim, acc);
    cpu::load_row(b, dt, dim, tmp);
    for (int64_t i = 0; i < dim; ++i) acc[i] += tmp[i];
    cpu::round_row(acc, dt, dim);
    cpu::store_row(acc, dt, dim, sum);
}

// Rows of a + b: stores the sum rounded to the activation dtype, normalizes that rounded sum (what
// the next layer reads) in place with `norm`, and stores the result (or its quantized codes).
template <class Norm>
void add_norm_rows(const void* a, const void* b, void* normed, void* sum, DType dtype, int64_t rows, int64_t dim,
                   const OutputQuant* quant, const Norm& norm) {
#pragma omp parallel if (rows * dim > cpu::kParallelMinElements)
    {
        thread_local std::vector<float> acc_buf, tmp_buf;
        float* acc = cpu::grow(acc_buf, dim);
        float* tmp = cpu::grow(tmp_buf, dim);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t off = r * dim;
            add_rows_rounded(cpu::elem_ptr(a, dtype, off), cpu::elem_ptr(b, dtype, off),
                             cpu::elem_ptr(sum, dtype, off), dtype, dim, acc, tmp);
            norm(acc);
            store_output_row(acc, dtype, quant, normed, r, dim);
        }
    }
}

}  // namespace

void rms_norm_cpu(const void* x, const void* weight, void* y, DType dtype, int64_t rows, int64_t dim, int64_t chunk,
                  float eps, const OutputQuant* quant) {
    cpu::check_float_dtype(dtype);
    check_shape(rows, dim);
    if (chunk <= 0 || dim % chunk != 0) {
        throw std::invalid_argument("rms_norm: chunk " + std::to_string(chunk) + " must divide dim " +
                                    std::to_string(dim));
    }
    std::vector<float> w(static_cast<size_t>(chunk));
    cpu::load_row(weight, dtype, chunk, w.data());
    cpu::for_each_row(x, dtype, rows, dim, [&](float* row, int64_t r) {
        for (int64_t c = 0; c < dim; c += chunk) cpu::rms_norm_inplace(row + c, w.data(), chunk, eps);
        store_output_row(row, dtype, quant, y, r, dim);
    });
}

void add_rms_norm_cpu(const void* a, const void* b, const void* weight, void* normed, void* sum, DType dtype,
                      int64_t rows, int64_t dim, float eps, const OutputQuant* quant) {
    cpu::check_float_dtype(dtype);
    check_shape(rows, dim);
    std::vector<float> w(static_cast<size_t>(dim));
    cpu::load_row(weight, dtype, dim, w.data());
    add_norm_rows(a, b, normed, sum, dtype, rows, dim, quant,
                  [&](float* acc) { cpu::rms_norm_inplace(acc, w.data(), dim, eps); });
}

void layer_norm_cpu(const void* x, const void* weight, const void* bias, void* y, DType dtype, int64_t rows,
                    int64_t dim, float eps, const OutputQuant* quant) {
    cpu::check_float_dtype(dtype);
    check_shape(rows, dim);
    std::vector<float> w(static_cast<size_t>(dim)), b(static_cast<size_t>(dim));
    cpu::load_row(weight, dtype, dim, w.data());
    cpu::load_row(bias, dtype, dim, b.data());
    cpu::for_each_row(x, dtype, rows, dim, [&](float* row, int64_t r) {
        layer_norm_inplace(row, w.data(), b.data(), dim, eps);
        store_output_row(row, dtype, quant, y, r, dim);
    });
}

void add_layer_norm_cpu(const void* a, const void* b, const void* weight, const void* bias, void* normed, void* sum,
                        DType dtype, int64_t rows, int64_t dim, float eps, const OutputQuant* quant) {
    cpu::check_float_dtype(dtype);
    check_shape(rows, dim);
    std::vector<float> w(static_cast<size_t>(dim)), bs(static_cast<size_t>(dim));
    cpu::load_row(weight, dtype, dim, w.data());
    cpu::load_row(bias, dtype, dim, bs.data());
    add_norm_rows(a, b, normed, sum, dtype, rows, dim, quant,
                  [&](float* acc) { layer_norm_inplace(acc, w.data(), bs.data(), dim, eps); });
}

}  // namespace trtllm::kernels
