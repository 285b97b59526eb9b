// CUDA versions of embedding.h, same contracts, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

void embedding_cuda(const int32_t* ids, const void* table, void* y, DType dtype, int64_t num_tokens, int64_t hidden,
                    cudaStream_t stream);

void gather_rows_cuda(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes,
                      cudaStream_t stream);

}  // namespace trtllm::kernels
