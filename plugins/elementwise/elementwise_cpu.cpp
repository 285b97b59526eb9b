// CPU elementwise ops: blocks of elements to float32 on the stack, computed, rounded back once.
#include "elementwise/elementwise.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"

namespace trtllm::kernels {
namespace {

// Elements per block: small enough for stack scratch and L1, large enough to vectorize well.
constexpr int64_t kBlock = 1024;

void check_count(int64_t n, const char* what) {
    if (n < 0) throw std::invalid_argument(std::string(what) + ": negative size " + std::to_string(n));
}

inline float gelu_tanh(float x) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

}  // namespace

void add_cpu(const void* a, const void* b, void* y, DType dtype, int64_t n) {
    cpu::check_float_dtype(dtype);
    check_count(n, "add");
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMinElements)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t begin = blk * kBlock, len = std::min(kBlock, n - begin);
        float fa[kBlock], fb[kBlock];
        cpu::load_row(cpu::elem_ptr(a, dtype, begin), dtype, len, fa);
        cpu::load_row(cpu::elem_ptr(b, dtype, begin), dtype, len, fb);
        for (int64_t i = 0; i < len; ++i) fa[i] += fb[i];
        cpu::store_row(fa, dtype, len, cpu::elem_ptr(y, dtype, begin));
    }
}

void silu_mul_cpu(const void* x, void* y, DType dtype, int64_t rows, int64_t inter, const OutputQuant* quant) {
    cpu::check_float_dtype(dtype);
    check_count(rows, "silu_mul");
    check_count(inter, "silu_mul");
    const int64_t blocks_per_row = (inter + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * inter > cpu::kParallelMinElements)
    for (int64_t job = 0; job < rows * blocks_per_row; ++job) {
        const int64_t r = job / blocks_per_row, begin = (job % blocks_per_row) * kBlock;
        const int64_t len = std::min(kBlock, inter - begin);
        float gate[kBlock], up[kBlock];
        cpu::load_row(cpu::elem_ptr(x, dtype, r * 2 * inter + begin), dtype, len, gate);
        cpu::load_row(cpu::elem_ptr(x, dtype, r * 2 * inter + inter + begin), dtype, len, up);
        for (int64_t i = 0; i < len; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
        if (quant != nullptr) {
            quantize_row(gate, len, begin, *quant, static_cast<char*>(y) + r * inter + begin);
        } else {
            cpu::store_row(gate, dtype, len, cpu::elem_ptr(y, dtype, r * inter + begin));
        }
    }
}

void gelu_tanh_cpu(const void* x, void* y, DType dtype, int64_t n, const OutputQuant* quant, int64_t cols) {
    cpu::check_float_dtype(dtype);
    check_count(n, "gelu_tanh");
    if (quant != nullptr && quant->per_channel()) {
        // Blocks must not straddle rows for per-channel scales: go row by row.
        if (cols <= 0 || n % cols != 0) throw std::invalid_argument("gelu_tanh: per-channel quantization needs cols");
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMinElements)
        for (int64_t r = 0; r < n / cols; ++r) {
            std::vector<float> v(static_cast<size_t>(cols));
            cpu::load_row(cpu::elem_ptr(x, dtype, r * cols), dtype, cols, v.data());
            for (auto& e : v) e = gelu_tanh(e);
            quantize_row(v.data(), cols, 0, *quant, static_cast<char*>(y) + r * cols);
        }
        return;
    }
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMinElements)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t begin = blk * kBlock, len = std::min(kBlock, n - begin);
        float v[kBlock];
        cpu::load_row(cpu::elem_ptr(x, dtype, begin), dtype, len, v);
        for (int64_t i = 0; i < len; ++i) v[i] = gelu_tanh(v[i]);
        if (quant != nullptr) {
            quantize_row(v, len, 0, *quant, static_cast<char*>(y) + begin);
        } else {
            cpu::store_row(v, dtype, len, cpu::elem_ptr(y, dtype, begin));
        }
    }
}

void add_bias_cpu(void* x, const void* bias, DType dtype, int64_t rows, int64_t n) {
    cpu::check_float_dtype(dtype);
    check_count(rows, "add_bias");
    check_count(n, "add_bias");
    std::vector<float> b(static_cast<size_t>(n));
    cpu::load_row(bias, dtype, n, b.data());
    const int64_t blocks_per_row = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * n > cpu::kParallelMinElements)
    for (int64_t job = 0; job < rows * blocks_per_row; ++job) {
        const int64_t r = job / blocks_per_row, begin = (job % blocks_per_row) * kBlock;
        const int64_t len = std::min(kBlock, n - begin);
        float v[kBlock];
        void* row = cpu::elem_ptr(x, dtype, r * n + begin);
        cpu::load_row(row, dtype, len, v);
        for (int64_t i = 0; i < len; ++i) v[i] += b[begin + i];
        cpu::store_row(v, dtype, len, row);
    }
}

}  // namespace trtllm::kernels
