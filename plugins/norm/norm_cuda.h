// CUDA versions of norm.h, same contracts, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

void rms_norm_cuda(const void* x, const void* weight, void* y, DType dtype, int64_t rows, int64_t dim, int64_t chunk,
                   float eps, cudaStream_t stream);
void add_rms_norm_cuda(const void* a, const void* b, const void* weight, void* normed, void* sum, DType dtype,
                       int64_t rows, int64_t dim, float eps, cudaStream_t stream);
void layer_norm_cuda(const void* x, const void* weight, const void* bias, void* y, DType dtype, int64_t rows,
                     int64_t dim, float eps, cudaStream_t stream);
void add_layer_norm_cuda(const void* a, const void* b, const void* weight, const void* bias, void* normed, void* sum,
                         DType dtype, int64_t rows, int64_t dim, float eps, cudaStream_t stream);

}  // namespace trtllm::kernels
