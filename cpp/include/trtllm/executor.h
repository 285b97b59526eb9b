// The executor: owns a backend, the KV cache and the scheduler, and runs the iteration loop on
// its own thread. Requests go in through enqueue(); token responses come out through
// await_responses(). Thread-safe.
//
// Tensor parallelism (`comm` given, one process per rank): rank 0 is the leader and works as
// above, broadcasting each iteration's batch plan to the other ranks (step_broadcast.h). On a
// follower the thread only runs the plans it receives; enqueue() throws, await_responses()
// returns nothing, and shutdown() (and the destructor) waits for the leader's shutdown.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "trtllm/backend.h"
#include "trtllm/kv_cache.h"
#include "trtllm/model.h"
#include "trtllm/mpi_comm.h"
#include "trtllm/request.h"
#include "trtllm/scheduler.h"

namespace trtllm {

struct ExecutorConfig {
    int tokens_per_block = 32;
    int64_t kv_cache_bytes = 0;            // 0: free_memory_fraction of available memory
    double free_memory_fraction = 0.5;     // CPU: of MemAvailable; capped at what the engine's limits can use
    double free_gpu_memory_fraction = 0.9; // CUDA: of the GPU memory free after weights and activations; same cap
    bool enable_prefix_reuse = true;
    bool enable_chunked_context = true;
    SchedulerPolicy policy = SchedulerPolicy::kMaxUtilization;
    int max_batch_size = 0;                // 0: the engine's; may only lower it
    int max_num_tokens = 0;                // 0: the engine's; may only lower it
};

// One step of a request's output: the tokens generated since its previous response.
struct Response {
    int64_t request_id = 0;
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;                                       // per token, when asked
    std::vector<std::vector<std::pair<int32_t, float>>> top_logprobs;  // per token, when asked
    std::vector<float> context_logits;     // [num_prompt, vocab_size], once, when asked
    std::vector<float> generation_logits;  // [tokens.size(), vocab_size], when asked
    bool finished = false;
    FinishReason finish_reason = FinishReason::kNone;
    std::string error;                     // non-empty: the request failed (finished is true)
    // Set on the final response.
    double time_to_first_token_s = 0.0;
    double total_time_s = 0.0;
    int num_prompt_tokens = 0;
    int num_generated_tokens = 0;
    int num_reused_tokens = 0;             // prompt tokens served from the prefix cache
    int num_preemptions = 0;
};

struct ExecutorStats {
    int64_t iterations = 0;
    int64_t num_waiting = 0;
    int64_t num_running = 0;
    int64_t generated_tokens = 0;          // cumulative
    int64_t prompt_tokens_computed = 0;    // cumulative, recomputation included
    KVCacheStats kv;
    int64_t kv_cache_bytes = 0;
    // Where the leader's time goes, cumulative: all of step() (scheduling, inputs, forward, sampling,
    // responses) and within it the backend's forward (launches and the wait for the device).
    double step_seconds = 0.0;
    double forward_seconds = 0.0;
    // The same forward time for the iterations that computed no prompt token (decode steps only):
    // a benchmark's decode step without its prefill averaged in.
    int64_t decode_iterations = 0;
    double decode_forward_seconds = 0.0;
    // Under tensor parallelism, the part of step() spent broadcasting the plan: it waits until
    // every follower has taken it, so a follower late from its last step shows here.
    double broadcast_seconds = 0.0;
};

class Executor {
public:
    // With `comm`, every rank constructs its executor on its own engine file; the ranks agree
    // that all loaded before any runs (std::runtime_error on every rank naming each failed rank).
    Executor(const std::string& engine_path, const ExecutorConfig& config, std::shared_ptr<MpiComm> comm = nullptr);
    ~Executor();
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    // Validates the request (std::invalid_argument naming the bad field and its range) and
    // queues it; returns its id.
    int64_t enqueue(const RequestSpec& spec);
    // Validates every request, then queues them all at once (or none, if one is bad): the
    // scheduler sees them together, so a batch's first step and thus its numerics do not depend
    // on how fast the caller queued it. Returns their ids in order.
    std::vector<int64_t> enqueue_batch(const std::vector<RequestSpec>& specs);
    // Finishes the request with kCancelled at the next iteration boundary, freeing its KV blocks.
    void cancel(int64_t request_id);
    // Responses ready now; waits up to timeout_s for the first one.
    std::vector<Response> await_responses(double timeout_s);
    // Stops the loop; requests still queued or running finish with kCancelled.
    void shutdown();

    ExecutorStats stats() const;
    const ModelInfo& model_info() const { return model_->info(); }
    const ExecutorConfig& config() const { return config_; }
    int64_t num_kv_blocks() const { return num_kv_blocks_; }
    bool is_leader() const { return !comm_ || comm_->rank() == 0; }

private:
    void load_and_size(const std::string& engine_path);  // model_, config_ limits, num_kv_blocks_
    void make_backend();                                 // backend_ for the engine's target, on every rank
    void loop();
    void follow();               // a follower's worker thread
    std::unique_ptr<Request> make_request(const RequestSpec& spec) const;  // validated, not yet queued
    void admit_new_requests();   // under mutex_
    void step();                 // one iteration, worker thread only
    void finish(Request& r, FinishReason reason, Response& response);

    std::shared_ptr<const Model> model_;
    ExecutorConfig config_;
    int64_t num_kv_blocks_ = 0;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<KVCacheManager> kv_;
    std::unique_ptr<Scheduler> scheduler_;
    std::shared_ptr<MpiComm> comm_;              // null without tensor parallelism
    std::unique_ptr<MpiComm::Lease> comm_lease_;

    // Worker-thread state.
    std::map<int64_t, std::unique_ptr<Request>> requests_;
    std::deque<Request*> waiting_;
    std::vector<Request*> running_;
    std::map<int64_t, std::vector<float>> context_logits_;
    int64_t next_arrival_ = 0;

    // Shared state, under mutex_.
    mutable std::mutex mutex_;
    std::condition_variable work_cv_, response_cv_;
    std::vector<std::unique_ptr<Request>> pending_;
    std::set<int64_t> cancelled_;
    std::deque<Response> responses_;
    ExecutorStats stats_;
    int64_t next_id_ = 1;
    bool stop_ = false;
    std::string fatal_error_;
    std::thread worker_;
};

}  // namespace trtllm
