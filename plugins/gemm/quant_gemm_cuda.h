// Kernels of the quantized GEMMs (gemm_cuda.h's CublasLtGemm drives them): the decode GEMV for
// fp8 / int8 activations and the int8 epilogue. Internal to plugins/gemm.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/gemm_cuda.h"

namespace trtllm::kernels {

// Whether this process's GPU has the tensor-core MMA the GEMV needs: fp8 sm_89+, int8 sm_80+.
bool quant_gemv_supported(bool int8);

// y[m, n] = x[m, k] · w[n, k]ᵀ for m <= kGemvMaxRows, x and w of shape.x_dtype (fp8 / int8),
// with the op's epilogue: fp8 fl(fl(Σ) · alpha) + bias; int8 fl(float(acc) · alpha[n]) + bias.
void quant_gemv_cuda(const GemmShape& shape, int64_t m, const void* x, const void* w, const void* bias, void* y,
                     const GemmScales& scales, cudaStream_t stream);

// y[m, n] = round(fl(float(acc[m, n]) · alpha[n]) + bias[n]) in y_dtype (bias in y_dtype or null).
void int8_epilogue_cuda(const int32_t* acc, const float* alpha, const void* bias, void* y, DType y_dtype, int64_t m,
                        int64_t n, cudaStream_t stream);

// Timing inputs for the tuner: fp8 from uniform [-1, 1), int8 uniform in [-127, 127]; never all zeros.
void fill_random_quantized(void* p, DType dtype, int64_t n, uint32_t seed, cudaStream_t stream);

}  // namespace trtllm::kernels
