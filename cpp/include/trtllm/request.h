// A generation request as the scheduler, KV cache, executor and sampler see it.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace trtllm {

// Defaults give greedy decoding. Order of application (as HF / vLLM): penalties, min_new_tokens
// end-id suppression, temperature, top_k, top_p, min_p, then sample.
struct SamplingConfig {
    float temperature = 0.0f;          // 0: greedy (argmax)
    int top_k = 0;                     // 0: off
    float top_p = 1.0f;                // (0, 1]
    float min_p = 0.0f;                // [0, 1)
    float repetition_penalty = 1.0f;   // > 0; over prompt and generated tokens (HF semantics)
    float presence_penalty = 0.0f;     // over generated tokens (OpenAI semantics)
    float frequency_penalty = 0.0f;    // over generated tokens (OpenAI semantics)
    uint64_t seed = 0;
    bool has_seed = false;             // false: seeded from a random device
    int num_logprobs = -1;             // -1: none; 0: the sampled token's; k: also the top k
};

struct RequestSpec {
    std::vector<int32_t> prompt;
    int max_new_tokens = 16;
    int min_new_tokens = 0;
    int32_t end_id = -1;                          // -1: never stop on a token id
    std::vector<int32_t> stop_token_ids;
    std::vector<std::vector<int32_t>> stop_sequences;  // stop when the output ends with one of them
    SamplingConfig sampling;
    bool return_context_logits = false;
    bool return_generation_logits = false;
};

enum class FinishReason : int32_t { kNone, kLength, kEndId, kStopToken, kStopSequence, kCancelled };

// Runtime state of one sequence. tokens = prompt followed by the generated tokens. The KV cache
// holds the first `num_computed` of them; the next iteration feeds tokens [num_computed, end).
// When it reaches the end, the last token's logits yield the next token. A preempted request
// restarts at num_computed = 0 and recomputes prompt and generated tokens alike.
struct Request {
    int64_t id = 0;
    RequestSpec spec;
    std::vector<int32_t> tokens;
    int num_prompt = 0;
    int num_computed = 0;
    int64_t arrival = 0;           // admission order: lower is older
    int num_preemptions = 0;
    bool started = false;          // scheduled at least once
    int num_reused_tokens = 0;     // prompt tokens the prefix cache supplied at first admission
    FinishReason finish = FinishReason::kNone;
    std::mt19937_64 rng;
    std::chrono::steady_clock::time_point enqueue_time, first_token_time;

    int num_generated() const { return static_cast<int>(tokens.size()) - num_prompt; }
    int num_remaining() const { return static_cast<int>(tokens.size()) - num_computed; }
    bool finished() const { return finish != FinishReason::kNone; }
    // Most tokens this request can ever hold in the KV cache.
    int max_total_tokens() const { return num_prompt + spec.max_new_tokens; }
};

}  // namespace trtllm
