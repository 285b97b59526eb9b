// CUDA versions of collective.h, and the float32 staging of 16-bit all-reduces, enqueued on
// `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

void concat_shards_cuda(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp,
                        cudaStream_t stream);

// y[i] = float(x[i]) for n activations of `dtype` (float32, bfloat16, float16).
void widen_to_float_cuda(const void* x, DType dtype, float* y, int64_t n, cudaStream_t stream);
// y[i] = x[i] rounded to `dtype` (to nearest even), once.
void narrow_from_float_cuda(const float* x, void* y, DType dtype, int64_t n, cudaStream_t stream);

}  // namespace trtllm::kernels
