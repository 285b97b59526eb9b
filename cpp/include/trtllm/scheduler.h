// In-flight batching: each iteration picks which requests run and how many of their tokens,
// under max_batch_size requests and max_num_tokens tokens.
#pragma once

#include <deque>
#include <vector>

#include "trtllm/kv_cache.h"
#include "trtllm/request.h"

namespace trtllm {

enum class SchedulerPolicy {
    kMaxUtilization,     // admit while the next chunk fits; preempt the newest request when blocks run out
    kGuaranteedNoEvict,  // admit only requests whose whole lifetime (prompt + max_new_tokens) fits now
};

struct SchedulerConfig {
    int max_batch_size = 64;
    int max_num_tokens = 4096;
    SchedulerPolicy policy = SchedulerPolicy::kMaxUtilization;
    bool enable_chunked_context = true;  // split prompts longer than the token budget across iterations
};

struct ScheduledRequest {
    Request* request;
    int num_new_tokens;  // feeds tokens [num_computed, num_computed + num_new_tokens)
};

struct Schedule {
    std::vector<ScheduledRequest> scheduled;  // requests in generation (one token) first, then context chunks
    std::vector<Request*> preempted;          // moved back to the front of `waiting`, blocks freed
};

class Scheduler {
public:
    explicit Scheduler(const SchedulerConfig& config) : config_(config) {}

    // Running requests (ordered oldest first) keep their place unless preempted; waiting ones
    // are admitted first come, first served, moving to the back of `running`. Admission calls
    // kv.add_sequence (prefix reuse sets num_computed) and every scheduled request's blocks are
    // reserved through kv.reserve before this returns. Never drops a request.
    //
    // Details: no request is admitted in an iteration that preempted; `running` never grows
    // past max_batch_size. The executor must reject at enqueue a request that can never run: an
    // empty prompt, num_prompt + max_new_tokens over the pool's tokens, or (chunking off) a
    // prompt over max_num_tokens. The scheduler still terminates on them: such a waiting
    // request is skipped (left in place, not blocking others), and a recompute longer than
    // max_num_tokens is chunked even with chunking off.
    Schedule schedule(std::deque<Request*>& waiting, std::vector<Request*>& running, KVCacheManager& kv);

    const SchedulerConfig& config() const { return config_; }

private:
    SchedulerConfig config_;
};

}  // namespace trtllm
