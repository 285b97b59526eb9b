#include "trtllm/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace trtllm {
namespace {

bool is_decode(const Request& r) { return r.num_remaining() == 1; }

// Tokens a request with `remaining` tokens to feed takes from `budget`, or 0 if it waits. With
// chunking off a prompt runs whole or not at all, except one longer than a whole iteration's
// budget: that can only be a recompute after preemption (the executor rejects longer prompts at
// enqueue), and chunking it is the only way it ever runs again.
int context_chunk(int remaining, int budget, int max_num_tokens, bool chunking) {
    if (remaining <= 0 || budget <= 0) return 0;
    if (chunking || remaining > max_num_tokens) return std::min(remaining, budget);
    return remaining <= budget ? remaining : 0;
}

}  // namespace

Schedule Scheduler::schedule(std::deque<Request*>& waiting, std::vector<Request*>& running, KVCacheManager& kv) {
    const bool may_preempt = config_.policy == SchedulerPolicy::kMaxUtilization;
    const size_t max_batch_size = static_cast<size_t>(std::max(0, config_.max_batch_size));
    Schedule out;
    std::vector<ScheduledRequest> generation, context;
    auto batch_size = [&] { return generation.size() + context.size(); };
    int budget = config_.max_num_tokens;

    // Recompute later from scratch (vLLM's recompute preemption): the request keeps its tokens,
    // and goes to the front of `waiting` so it stays ahead of requests that arrived after it.
    auto preempt = [&](Request* r) {
        kv.free_sequence(r->id);
        r->num_computed = 0;
        ++r->num_preemptions;
        waiting.push_front(r);
        out.preempted.push_back(r);
    };

    // Running requests, oldest first. Only requests after index i can be preempted (the newest
    // is running.back()), so every request already scheduled this iteration keeps its blocks.
    // No decode waits behind a prompt chunk: a request still in its prompt used the whole budget
    // last iteration, so nothing was admitted after it and context requests are the newest.
    for (size_t i = 0; i < running.size(); ++i) {
        Request* r = running[i];
        const bool decode = is_decode(*r);
        if (batch_size() >= max_batch_size) break;  // only when the caller overfilled `running`
        const int n = decode ? std::min(1, budget)
                             : context_chunk(r->num_remaining(), budget, config_.max_num_tokens,
                                             config_.enable_chunked_context);
        if (n == 0) continue;

        bool reserved = kv.reserve(r->id, r->num_computed + n);
        bool preempted_self = false;
        // Each pass removes one request from `running`, so this ends.
        while (!reserved && may_preempt) {
            Request* victim = running.back();
            running.pop_back();
            preempt(victim);
            if (victim == r) {
                preempted_self = true;
                break;
            }
            reserved = kv.reserve(r->id, r->num_computed + n);
        }
        // kGuaranteedNoEvict reserved the whole lifetime at admission, so a failure here means
        // the caller bypassed admission; the request waits rather than evicting anyone.
        if (!reserved || preempted_self) continue;
        (decode ? generation : context).push_back({r, n});
        budget -= n;
    }

    // Admission, first come first served. Not in an iteration that had to preempt: blocks just
    // ran out, and re-admitting the victims at once would only thrash.
    if (out.preempted.empty()) {
        const int64_t tokens_per_block = kv.tokens_per_block();
        for (auto it = waiting.begin();
             it != waiting.end() && running.size() < max_batch_size && batch_size() < max_batch_size && budget > 0;) {
            Request* r = *it;
            const int64_t lifetime_tokens = std::max<int64_t>(r->max_total_tokens(), static_cast<int64_t>(r->tokens.size()));
            // A request that could never run (empty, or a lifetime over the whole pool: the
            // executor rejects both at enqueue) is left in place rather than blocking every
            // request behind it forever.
            if (r->tokens.empty() || (lifetime_tokens + tokens_per_block - 1) / tokens_per_block > kv.num_blocks()) {
                ++it;
                continue;
            }
            // Context logits need every prompt token computed, so such requests never reuse.
            const bool allow_reuse = !r->spec.return_context_logits;
            const int reused = kv.num_reusable_tokens(r->tokens, allow_reuse);
            const int n = context_chunk(static_cast<int>(r->tokens.size()) - reused, budget, config_.max_num_tokens,
                                        config_.enable_chunked_context);
            if (n == 0) break;
            const int reserve_tokens = may_preempt ? reused + n : static_cast<int>(lifetime_tokens);
            if (kv.blocks_needed_to_add(r->tokens, reserve_tokens, allow_reuse) > kv.num_available_blocks()) break;

            r->num_computed = kv.add_sequence(r->id, r->tokens, allow_reuse);
            if (!kv.reserve(r->id, reserve_tokens)) {
                throw std::logic_error("Scheduler: reserve failed for request " + std::to_string(r->id) +
                                       " after blocks_needed_to_add said it fits");
            }
            it = waiting.erase(it);
            running.push_back(r);
            context.push_back({r, n});
            budget -= n;
        }
    }

    out.scheduled = std::move(generation);
    out.scheduled.insert(out.scheduled.end(), context.begin(), context.end());
    return out;
}

}  // namespace trtllm
