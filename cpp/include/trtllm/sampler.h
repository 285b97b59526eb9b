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

// The one uniform in [0, 1) a non-greedy draw takes from a request's stream: (rng() >> 11) * 2^-53.
// The device sampler gets it from the host, so a seed gives the same stream on either sampler.
double draw_uniform(std::mt19937_64& rng);

// Draws the next token. `tokens`/`num_prompt` give the history for penalties: repetition over
// all of it, presence/frequency over the generated part. `banned_tokens` get -inf after the
// penalties: the caller passes end_id and stop_token_ids while fewer than min_new_tokens are
// generated (ids outside the vocabulary are ignored). temperature 0 is greedy (lowest id wins
// ties) and takes nothing from `rng`; otherwise exactly one uniform double
// u = (rng() >> 11) * 2^-53 picks the token by inverse CDF over the kept tokens sorted by
// descending probability (ties by ascending id), so a seed gives the same stream on every
// platform. top_k keeps exactly k tokens (boundary ties to the lower id, so top_k = 1 is greedy).
// Logprobs (when num_logprobs >= 0) come from log_softmax of the unmodified logits, before
// penalties and temperature (vLLM's default "raw" logprobs).
// Throws std::invalid_argument for an invalid config, a bad num_prompt or when every token is
// banned, std::out_of_range for a history token outside [0, vocab_size).
SampledToken sample_token(const float* logits, int vocab_size, const SamplingConfig& config,
                          const std::vector<int32_t>& tokens, int num_prompt,
                          const std::vector<int32_t>& banned_tokens, std::mt19937_64& rng);

}  // namespace trtllm
