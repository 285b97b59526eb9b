// Token sampling from one request's logits row (CPU reference; the GPU sampler matches it).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "trtllm/request.h"

namespace trtllm {

struct SampledToken {
    int32_t token = -1;
    float logprob = 0.0f;                                 // of `token` under the model's raw distribution
    std::vector<std::pair<int32_t, float>> top_logprobs;  // top num_logprobs of the raw distribution, best first
};

// Checks ranges and returns "" or an error naming the bad field and its allowed range.
std::string validate_sampling(const SamplingConfig& config);

// Draws the next token. `tokens`/`num_prompt` give the history for penalties: repetition over
// all of it, presence/frequency over the generated part. While `suppress_end_id` (fewer than
// min_new_tokens generated), `end_id` (and stop_token_ids) cannot be drawn. `rng` is the request's
// generator; a uniform double is taken as (rng() >> 11) * 2^-53 so streams are reproducible
// across platforms. Logprobs (when asked) come from log_softmax of the unmodified logits.
SampledToken sample_token(const float* logits, int vocab_size, const SamplingConfig& config,
                          const std::vector<int32_t>& tokens, int num_prompt,
                          const std::vector<int32_t>& banned_tokens, std::mt19937_64& rng);

}  // namespace trtllm
