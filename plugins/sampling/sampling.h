// What the device sampler takes and returns per logits row (plain C++: the Backend interface
// names these without pulling in CUDA headers). The kernel is in sampling_cuda.h.
#pragma once

#include <cstdint>

namespace trtllm::kernels {

// The SamplingConfig fields the device sampler implements (no penalties, bans or top logprobs:
// rows that need those go to the CPU sampler), plus the draw itself.
struct RowSampling {
    float temperature = 0.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;
    float min_p = 0.0f;
    double uniform = 0.0;      // in [0, 1): picks the token by inverse CDF over the kept tokens
    int32_t want_logprob = 0;  // 1: also the sampled token's logprob (num_logprobs == 0)
};

// The sampled token (or one of the error codes below) and its logprob under the raw logits.
struct RowSample {
    int32_t token = -1;
    float logprob = 0.0f;
};

constexpr int32_t kNoFiniteLogit = -1;  // every logit is -inf or NaN
constexpr int32_t kPosInfLogit = -2;    // temperature > 0 over logits holding +inf

}  // namespace trtllm::kernels
