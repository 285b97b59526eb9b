// GEMM for `linear`: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]), float32 accumulation.
#pragma once

#include <cstdint>
#include <vector>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

// A linear layer's weight as the CPU GEMM reads it: the engine's own tensor, in its stored
// dtype (not copied: a bf16 weight stays bf16, half the memory traffic of a float32 copy), and
// the bias converted to float32 once, at engine load.
struct GemmWeightCpu {
    int64_t n = 0, k = 0;
    const void* weight = nullptr;           // [n, k] row-major, not owned (the engine's mapping)
    DType weight_dtype = DType::kFloat32;
    std::vector<float> bias;                // [n] or empty
};

// `weight` must outlive the result.
GemmWeightCpu prepare_gemm_weight_cpu(const void* weight, DType weight_dtype, int64_t n, int64_t k,
                                      const void* bias /* nullable, weight_dtype */);

// x in an activation dtype, y in an activation dtype or float32 (logits). Rounds y once.
void gemm_cpu(const void* x, DType x_dtype, const GemmWeightCpu& w, void* y, DType y_dtype, int64_t m);

}  // namespace trtllm::kernels
