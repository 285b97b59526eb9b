// CUDA versions of norm.h, same contracts, enqueued on `stream`. Pointers are device pointers.
// `quant` (op set v2): the (first) output is quantized from the float32 result, as on the CPU;
// rms_norm quantizes whole-row norms only (chunk == dim), the only kind the builder quantizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "quantization/quantize_cuda.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

void rms_norm_cuda(const void* x, const void* weight, void* y, DType dtype, int64_t rows, int64_t dim, int64_t chunk,
                   float eps, cudaStream_t stream, const OutputQuantCuda* quant = nullptr);
void add_rms_norm_cuda(const void* a, const void* b, const void* weight, void* normed, void* sum, DType dtype,
                       int64_t rows, int64_t dim, float eps, cudaStream_t stream,
                       const OutputQuantCuda* quant = nullptr);
void layer_norm_cuda(const void* x, const void* weight, const void* bias, void* y, DType dtype, int64_t rows,
                     int64_t dim, float eps, cudaStream_t stream, const OutputQuantCuda* quant = nullptr);
void add_layer_norm_cuda(const void* a, const void* b, const void* weight, const void* bias, void* normed, void* sum,
                         DType dtype, int64_t rows, int64_t dim, float eps, cudaStream_t stream,
                         const OutputQuantCuda* quant = nullptr);

}  // namespace trtllm::kernels
