// GEMM for `linear`: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]), float32 accumulation.
#pragma once

#include <cstdint>
#include <vector>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

// A linear layer's weight made ready for the CPU GEMM once, at engine load: float32 copies of
// weight and bias (BLAS sgemm reads them; bf16/fp16 weights are converted exactly).
struct GemmWeightCpu {
    int64_t n = 0, k = 0;
    std::vector<float> weight;   // [n, k] row-major
    std::vector<float> bias;     // [n] or empty
};

GemmWeightCpu prepare_gemm_weight_cpu(const void* weight, DType weight_dtype, int64_t n, int64_t k,
                                      const void* bias /* nullable, weight_dtype */);

// x in an activation dtype, y in an activation dtype or float32 (logits). Rounds y once.
void gemm_cpu(const void* x, DType x_dtype, const GemmWeightCpu& w, void* y, DType y_dtype, int64_t m);

}  // namespace trtllm::kernels
