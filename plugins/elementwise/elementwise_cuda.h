// CUDA versions of elementwise.h, same contracts, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "quantization/quantize_cuda.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

void add_cuda(const void* a, const void* b, void* y, DType dtype, int64_t n, cudaStream_t stream);
// `quant` (op set v2): y quantized from the float32 result, as on the CPU. gelu_tanh's `cols` (the
// last dim) is needed only for per-channel scales.
void silu_mul_cuda(const void* x, void* y, DType dtype, int64_t rows, int64_t inter, cudaStream_t stream,
                   const OutputQuantCuda* quant = nullptr);
void gelu_tanh_cuda(const void* x, void* y, DType dtype, int64_t n, cudaStream_t stream,
                    const OutputQuantCuda* quant = nullptr, int64_t cols = 0);
void add_bias_cuda(void* x, const void* bias, DType dtype, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace trtllm::kernels
