// CUDA versions of elementwise.h, same contracts, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

void add_cuda(const void* a, const void* b, void* y, DType dtype, int64_t n, cudaStream_t stream);
void silu_mul_cuda(const void* x, void* y, DType dtype, int64_t rows, int64_t inter, cudaStream_t stream);
void gelu_tanh_cuda(const void* x, void* y, DType dtype, int64_t n, cudaStream_t stream);
void add_bias_cuda(void* x, const void* bias, DType dtype, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace trtllm::kernels
