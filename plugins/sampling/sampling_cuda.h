// Sampling on the GPU: greedy, temperature, top_k, top_p and min_p per row, with the semantics of
// the CPU sampler (trtllm/sampler.h) for the tokens it keeps; only token ids and logprobs come
// back to the host. Penalties, banned tokens and top logprobs stay on the CPU sampler.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sampling/sampling.h"

namespace trtllm::kernels {

// One block per row of logits[r * row_stride + 0 .. vocab_size) (float32), params[r] -> out[r].
// Device pointers.
//   temperature 0: the largest logit, lowest id on ties, NaN never wins (the CPU greedy pick).
//   else: the kept set is the CPU sampler's (top_k tokens in the order "larger logit, then lower
//     id"; of those the smallest prefix whose mass reaches top_p; of those the tokens with
//     weight >= min_p * max weight), and `uniform` picks a token by inverse CDF over the kept
//     tokens in id order, with weights exp((logit - max) / temperature) in 2^-40 fixed point (so
//     every sum is exact and a uniform gives the same token on every run; tokens under 2^-41 of
//     the top weight are kept but never drawn).
//   out.token is kNoFiniteLogit / kPosInfLogit where the CPU sampler throws.
void sample_rows_cuda(const float* logits, int64_t rows, int64_t row_stride, int vocab_size, const RowSampling* params,
                      RowSample* out, cudaStream_t stream);

}  // namespace trtllm::kernels
