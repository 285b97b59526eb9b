// Elementwise ops. float32 math, outputs rounded once to `dtype`.
#pragma once

#include <cstdint>

#include "quantization/quantize.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

void add_cpu(const void* a, const void* b, void* y, DType dtype, int64_t n);

// x [rows, 2 * inter] -> y [rows, inter] = silu(x[:, :inter]) * x[:, inter:]
// `quant` (op set v2): y quantized from the float32 result (per-channel scales index the column).
void silu_mul_cpu(const void* x, void* y, DType dtype, int64_t rows, int64_t inter, const OutputQuant* quant = nullptr);

// `quant`: as silu_mul; `cols` (the last dim) is needed only for per-channel scales.
void gelu_tanh_cpu(const void* x, void* y, DType dtype, int64_t n, const OutputQuant* quant = nullptr,
                   int64_t cols = 0);

// x[rows, n] += bias[n] in place (the bias of a row-parallel linear, after its all-reduce).
void add_bias_cpu(void* x, const void* bias, DType dtype, int64_t rows, int64_t n);

}  // namespace trtllm::kernels
