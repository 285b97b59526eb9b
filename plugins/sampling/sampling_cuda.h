// Sampling on the GPU. Greedy only for now: the executor picks plain greedy rows on the device
// (no logits copied back); every other sampling mode runs the CPU sampler (trtllm/sampler.h)
// on logits rows copied to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace trtllm::kernels {

// out[r] = the id of the largest of logits[r * row_stride + 0 .. vocab_size), as the CPU
// sampler's greedy pick: the lowest id wins ties, NaN never wins, -1 when every logit is -inf
// or NaN. Device pointers.
void argmax_rows_cuda(const float* logits, int64_t rows, int64_t row_stride, int vocab_size, int32_t* out,
                      cudaStream_t stream);

}  // namespace trtllm::kernels
