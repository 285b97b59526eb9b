#include "trtllm/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>

#include "trtllm/device_info.h"
#include "trtllm/nccl_comm.h"
#include "trtllm/sampler.h"
#include "trtllm/step_broadcast.h"

namespace trtllm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

// C stdio, not iostreams: on the GPU image (torch loaded in the process) `ifstream >> long`
// crashed inside libstdc++'s number parsing; fgets/sscanf need no locale facets.
int64_t mem_available_bytes() {
    std::FILE* meminfo = std::fopen("/proc/meminfo", "r");
    if (meminfo == nullptr) return int64_t{4} << 30;  // no /proc: assume 4 GiB
    char line[256];
    long long kib = -1;
    while (kib < 0 && std::fgets(line, sizeof(line), meminfo) != nullptr) {
        if (std::sscanf(line, "MemAvailable: %lld kB", &kib) != 1) kib = -1;
    }
    std::fclose(meminfo);
    return kib < 0 ? int64_t{4} << 30 : static_cast<int64_t>(kib) * 1024;
}

std::string range_error(const std::string& field, int64_t value, const std::string& allowed) {
    return field + " is " + std::to_string(value) + ", must be " + allowed;
}

bool ends_with(const std::vector<int32_t>& tokens, int num_prompt, const std::vector<int32_t>& suffix) {
    const size_t generated = tokens.size() - static_cast<size_t>(num_prompt);
    if (suffix.empty() || suffix.size() > generated) return false;
    return std::equal(suffix.rbegin(), suffix.rend(), tokens.rbegin());
}

// Runs one startup step. With tensor parallelism every rank runs it and then all agree: a rank
// that failed tells the others (rank 0 names it and its error) instead of leaving them waiting in
// a collective it never joins.
template <class F>
void on_every_rank(MpiComm* comm, const std::string& what, F&& step) {
    if (comm == nullptr) {
        step();
        return;
    }
    std::string error;
    try {
        step();
    } catch (const std::exception& e) {
        error = *e.what() ? e.what() : "unknown error";
    }
    comm->check_all_ok(error, what);
}

// A CUDA engine runs only where it was tuned: a runtime with the CUDA backend and a GPU of its SM arch
// (GPU 0 here, before any GPU is picked; the backend checks a TP rank's own GPU again).
void check_cuda_engine(const std::string& path, const ModelInfo& info) {
    if (!cuda_available()) {
#ifdef TRTLLM_WITH_CUDA
        const std::string why = "no CUDA device is visible";
#else
        const std::string why = "trtllm_runtime was built without CUDA";
#endif
        throw EngineFormatError(path + ": engine was built for target 'cuda', but this runtime cannot run it (" + why +
                                "); rebuild the engine with --target cpu, or run it on a GPU machine");
    }
    const int device_arch = cuda_device_sm_arch(0);
    if (device_arch != info.sm_arch) {
        throw EngineFormatError(path + ": engine was built for sm_" + std::to_string(info.sm_arch) +
                                ", but the device is sm_" + std::to_string(device_arch) +
                                "; rebuild the engine on (or for) this GPU");
    }
}

// Bytes of one KV block across all layers: what the pool is counted in.
int64_t kv_block_bytes_all_layers(const ModelInfo& info, int tokens_per_block) {
    return kernels::kv_block_bytes(info.num_kv_heads, tokens_per_block, info.head_dim, info.kv_cache_dtype) *
           info.num_layers;
}

}  // namespace

Executor::Executor(const std::string& engine_path, const ExecutorConfig& config, std::shared_ptr<MpiComm> comm)
    : config_(config), comm_(std::move(comm)) {
    on_every_rank(comm_.get(), "loading the engine files", [&] {
        if (comm_) comm_lease_ = std::make_unique<MpiComm::Lease>(comm_);
        load_and_size(engine_path);
    });
    if (comm_) {
        // The leader hands out block ids for every rank's cache: same block size, same count.
        const int64_t tpb = config_.tokens_per_block;
        if (comm_->all_reduce_min(tpb, "agreeing on tokens_per_block") !=
            comm_->all_reduce_max(tpb, "agreeing on tokens_per_block")) {
            throw std::invalid_argument("ranks were given different tokens_per_block; give them all the same");
        }
        num_kv_blocks_ = comm_->all_reduce_min(num_kv_blocks_, "agreeing on the KV cache size");
    }
    make_backend();
    kv_ = std::make_unique<KVCacheManager>(
        KVCacheConfig{config_.tokens_per_block, num_kv_blocks_, config_.enable_prefix_reuse});
    scheduler_ = std::make_unique<Scheduler>(SchedulerConfig{config_.max_batch_size, config_.max_num_tokens,
                                                             config_.policy, config_.enable_chunked_context});
    // What the scheduler can use: under GPU TP the smallest rank's pool, not this rank's own.
    stats_.kv_cache_bytes = num_kv_blocks_ * kv_block_bytes_all_layers(model_->info(), config_.tokens_per_block);
    stats_.kv = kv_->stats();
    worker_ = std::thread([this] { is_leader() ? loop() : follow(); });
}

void Executor::load_and_size(const std::string& engine_path) {
    model_ = Model::load(engine_path, "");  // the engine's target picks the backend
    const ModelInfo& info = model_->info();
    const bool on_gpu = info.target == "cuda";
    if (on_gpu) check_cuda_engine(engine_path, info);
    if (config_.tokens_per_block < 1 || config_.tokens_per_block > 1024) {
        throw std::invalid_argument(range_error("tokens_per_block", config_.tokens_per_block, "in [1, 1024]"));
    }
    if (config_.max_batch_size < 0 || config_.max_batch_size > info.max_batch_size) {
        throw std::invalid_argument(range_error("max_batch_size", config_.max_batch_size,
                                                "in [0, " + std::to_string(info.max_batch_size) + "] (the engine's limit)"));
    }
    if (config_.max_num_tokens < 0 || config_.max_num_tokens > info.max_num_tokens) {
        throw std::invalid_argument(range_error("max_num_tokens", config_.max_num_tokens,
                                                "in [0, " + std::to_string(info.max_num_tokens) + "] (the engine's limit)"));
    }
    if (config_.max_batch_size == 0) config_.max_batch_size = info.max_batch_size;
    if (config_.max_num_tokens == 0) config_.max_num_tokens = info.max_num_tokens;

    const int64_t block_bytes = kv_block_bytes_all_layers(info, config_.tokens_per_block);
    int64_t budget = config_.kv_cache_bytes;
    // More than every slot filled to max_seq_len can never be used.
    const int64_t blocks_per_seq = (info.max_seq_len + config_.tokens_per_block - 1) / config_.tokens_per_block;
    const int64_t max_useful_blocks = blocks_per_seq * config_.max_batch_size;
    if (budget == 0 && on_gpu) {
        if (!(config_.free_gpu_memory_fraction > 0.0 && config_.free_gpu_memory_fraction <= 1.0)) {
            throw std::invalid_argument("free_gpu_memory_fraction must be in (0, 1], got " +
                                        std::to_string(config_.free_gpu_memory_fraction));
        }
    } else if (budget == 0) {
        if (!(config_.free_memory_fraction > 0.0 && config_.free_memory_fraction <= 1.0)) {
            throw std::invalid_argument("free_memory_fraction must be in (0, 1], got " +
                                        std::to_string(config_.free_memory_fraction));
        }
        budget = static_cast<int64_t>(config_.free_memory_fraction * static_cast<double>(mem_available_bytes()));
        budget = std::min(budget, max_useful_blocks * block_bytes);
    }
    num_kv_blocks_ = budget / block_bytes;
    if (num_kv_blocks_ < 1 && !(on_gpu && budget == 0)) {
        throw std::invalid_argument("KV cache budget of " + std::to_string(budget) + " bytes holds no block of " +
                                    std::to_string(block_bytes) + " bytes; raise kv_cache_bytes");
    }
    const int comm_size = comm_ ? comm_->size() : 1, comm_rank = comm_ ? comm_->rank() : 0;
    if (info.tp_size != comm_size || info.tp_rank != comm_rank) {
        throw std::invalid_argument(engine_path + " is rank " + std::to_string(info.tp_rank) + " of tp_size " +
                                    std::to_string(info.tp_size) + ", but this process is rank " +
                                    std::to_string(comm_rank) + " of " + std::to_string(comm_size) +
                                    (info.tp_size > 1 && !comm_ ? ": run one process per rank (mpirun -n " +
                                                                      std::to_string(info.tp_size) + ")"
                                                                : ""));
    }
}

void Executor::make_backend() {
    const ModelInfo& info = model_->info();
    if (info.target != "cuda") {
        on_every_rank(comm_.get(), "allocating the backend", [&] {
            backend_ = make_cpu_backend(model_, num_kv_blocks_, config_.tokens_per_block,
                                        comm_ ? make_mpi_communicator(comm_) : nullptr);
        });
        return;
    }
#ifdef TRTLLM_WITH_CUDA
    // One GPU per rank, NCCL between them. Collective, and a rank that cannot join ends the job:
    // so it comes before the allocations below, which may fail on one rank only.
    std::shared_ptr<NcclCommunicator> nccl = comm_ ? std::make_shared<NcclCommunicator>(comm_) : nullptr;
    on_every_rank(comm_.get(), "allocating the backend", [&] {
        const int64_t block_bytes = kv_block_bytes_all_layers(info, config_.tokens_per_block);
        const int64_t blocks_per_seq = (info.max_seq_len + config_.tokens_per_block - 1) / config_.tokens_per_block;
        // num_kv_blocks_ 0: the backend sizes the pool from the GPU memory left after its other allocations.
        backend_ = make_cuda_backend(model_, num_kv_blocks_, config_.tokens_per_block, std::move(nccl),
                                     config_.free_gpu_memory_fraction, blocks_per_seq * config_.max_batch_size);
        num_kv_blocks_ = backend_->kv_cache_bytes() / block_bytes;
    });
    // A GPU rank sizes its KV pool from its own free memory: the leader hands out blocks all have.
    if (comm_) num_kv_blocks_ = comm_->all_reduce_min(num_kv_blocks_, "agreeing on the KV cache size");
#endif
}

Executor::~Executor() { shutdown(); }

int64_t Executor::enqueue(const RequestSpec& spec) { return enqueue_batch({spec}).front(); }

std::vector<int64_t> Executor::enqueue_batch(const std::vector<RequestSpec>& specs) {
    std::vector<std::unique_ptr<Request>> requests;
    requests.reserve(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        try {
            requests.push_back(make_request(specs[i]));
        } catch (const std::invalid_argument& e) {
            if (specs.size() == 1) throw;
            throw std::invalid_argument("request " + std::to_string(i) + " of the batch: " + e.what());
        }
    }
    std::vector<int64_t> ids;
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) throw std::runtime_error("executor is shut down");
    if (!fatal_error_.empty()) throw std::runtime_error("executor failed: " + fatal_error_);
    for (auto& request : requests) {
        request->id = next_id_++;
        ids.push_back(request->id);
        pending_.push_back(std::move(request));
    }
    work_cv_.notify_one();
    return ids;
}

std::unique_ptr<Request> Executor::make_request(const RequestSpec& spec) const {
    if (!is_leader()) {
        throw std::runtime_error("rank " + std::to_string(comm_->rank()) + " is a follower: submit requests on rank 0");
    }
    const ModelInfo& info = model_->info();
    const int64_t prompt_len = static_cast<int64_t>(spec.prompt.size());
    if (prompt_len == 0) throw std::invalid_argument("prompt is empty: give at least one token");
    for (size_t i = 0; i < spec.prompt.size(); ++i) {
        if (spec.prompt[i] < 0 || spec.prompt[i] >= info.vocab_size) {
            throw std::invalid_argument("prompt token " + std::to_string(spec.prompt[i]) + " at index " +
                                        std::to_string(i) + " is outside the vocabulary [0, " +
                                        std::to_string(info.vocab_size) + ")");
        }
    }
    if (spec.max_new_tokens < 1) throw std::invalid_argument(range_error("max_new_tokens", spec.max_new_tokens, ">= 1"));
    if (spec.min_new_tokens < 0 || spec.min_new_tokens > spec.max_new_tokens) {
        throw std::invalid_argument(range_error("min_new_tokens", spec.min_new_tokens,
                                                "in [0, max_new_tokens=" + std::to_string(spec.max_new_tokens) + "]"));
    }
    if (prompt_len + spec.max_new_tokens > info.max_seq_len) {
        throw std::invalid_argument("prompt (" + std::to_string(prompt_len) + " tokens) + max_new_tokens (" +
                                    std::to_string(spec.max_new_tokens) + ") exceeds the engine's max_seq_len " +
                                    std::to_string(info.max_seq_len));
    }
    const int64_t lifetime_blocks = (prompt_len + spec.max_new_tokens + config_.tokens_per_block - 1) /
                                    config_.tokens_per_block;
    if (lifetime_blocks > num_kv_blocks_) {
        throw std::invalid_argument("prompt + max_new_tokens needs " + std::to_string(lifetime_blocks) +
                                    " KV blocks, the whole cache has " + std::to_string(num_kv_blocks_) +
                                    "; raise kv_cache_bytes or lower max_new_tokens");
    }
    if (!config_.enable_chunked_context && prompt_len > config_.max_num_tokens) {
        throw std::invalid_argument("prompt of " + std::to_string(prompt_len) + " tokens exceeds max_num_tokens " +
                                    std::to_string(config_.max_num_tokens) + " with chunked context disabled");
    }
    if (spec.return_context_logits && !info.gather_context_logits) {
        throw std::invalid_argument("return_context_logits needs an engine built with --gather-context-logits");
    }
    const std::string bad_sampling = validate_sampling(spec.sampling);
    if (!bad_sampling.empty()) throw std::invalid_argument(bad_sampling);
    if (spec.sampling.num_logprobs > info.vocab_size) {
        throw std::invalid_argument(range_error("num_logprobs", spec.sampling.num_logprobs, "<= vocab_size"));
    }

    auto request = std::make_unique<Request>();
    request->spec = spec;
    request->tokens = spec.prompt;
    request->num_prompt = static_cast<int>(prompt_len);
    request->rng.seed(spec.sampling.has_seed ? spec.sampling.seed : std::random_device{}());
    request->enqueue_time = Clock::now();
    return request;
}

void Executor::cancel(int64_t request_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_.insert(request_id);
    work_cv_.notify_one();
}

std::vector<Response> Executor::await_responses(double timeout_s) {
    std::unique_lock<std::mutex> lock(mutex_);
    response_cv_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, timeout_s)),
                          [this] { return !responses_.empty() || stop_; });
    std::vector<Response> out(std::make_move_iterator(responses_.begin()), std::make_move_iterator(responses_.end()));
    responses_.clear();
    return out;
}

void Executor::shutdown() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_ && !worker_.joinable()) return;
        stop_ = true;
        work_cv_.notify_all();
        response_cv_.notify_all();
    }
    if (worker_.joinable()) worker_.join();
    // Every rank frees its backend here, at the same point of the job: NCCL's communicator
    // teardown waits for its peers, so leaving it to whenever Python drops the executor could
    // block one rank in it while another already waits in the next collective.
    backend_.reset();
    comm_lease_.reset();  // no more MPI calls from this executor: the next one may take the communicator
}

ExecutorStats Executor::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

void Executor::finish(Request& r, FinishReason reason, Response& response) {
    r.finish = reason;
    response.finished = true;
    response.finish_reason = reason;
    const auto now = Clock::now();
    response.total_time_s = seconds_between(r.enqueue_time, now);
    response.time_to_first_token_s =
        r.num_generated() > 0 ? seconds_between(r.enqueue_time, r.first_token_time) : response.total_time_s;
    response.num_prompt_tokens = r.num_prompt;
    response.num_generated_tokens = r.num_generated();
    response.num_preemptions = r.num_preemptions;
    response.num_reused_tokens = r.num_reused_tokens;
    if (kv_->has_sequence(r.id)) kv_->free_sequence(r.id);
}

void Executor::admit_new_requests() {
    for (auto& request : pending_) {
        request->arrival = next_arrival_++;
        waiting_.push_back(request.get());
        requests_[request->id] = std::move(request);
    }
    pending_.clear();
    for (int64_t id : cancelled_) {
        auto it = requests_.find(id);
        if (it == requests_.end()) continue;  // unknown or already finished: nothing to do
        Request& r = *it->second;
        Response response;
        response.request_id = id;
        finish(r, FinishReason::kCancelled, response);
        waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &r), waiting_.end());
        running_.erase(std::remove(running_.begin(), running_.end(), &r), running_.end());
        responses_.push_back(std::move(response));
        context_logits_.erase(id);
        requests_.erase(it);
    }
    if (!cancelled_.empty()) response_cv_.notify_all();
    cancelled_.clear();
}

void Executor::loop() {
    while (true) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            work_cv_.wait(lock, [this] {
                return stop_ || !pending_.empty() || !cancelled_.empty() || !waiting_.empty() || !running_.empty();
            });
            if (stop_) break;
            admit_new_requests();
            stats_.num_waiting = static_cast<int64_t>(waiting_.size());
            stats_.num_running = static_cast<int64_t>(running_.size());
            stats_.kv = kv_->stats();  // cancellations free blocks here, and no step() may follow
        }
        if (waiting_.empty() && running_.empty()) continue;
        try {
            step();
        } catch (const std::exception& e) {
            // Under tensor parallelism the ranks may now stand at different ops: end the whole job.
            if (comm_) comm_->abort(std::string("iteration failed on the leader: ") + e.what());
            // A failing iteration fails every request in flight, loudly; the executor stops.
            std::lock_guard<std::mutex> lock(mutex_);
            fatal_error_ = e.what();
            stop_ = true;
            break;
        }
    }
    if (comm_) broadcast_shutdown(*comm_);
    // Whatever is left finishes as cancelled (or with the fatal error), so no caller waits forever.
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& request : pending_) requests_[request->id] = std::move(request);
    pending_.clear();
    for (auto& [id, request] : requests_) {
        Response response;
        response.request_id = id;
        response.error = fatal_error_;
        finish(*request, FinishReason::kCancelled, response);
        responses_.push_back(std::move(response));
    }
    requests_.clear();
    waiting_.clear();
    running_.clear();
    response_cv_.notify_all();
}

void Executor::follow() {
    try {
        while (std::optional<StepInput> step = receive_step(*comm_)) {
            // The leader samples; a follower only runs the ops (a GPU skips copying the logits back).
            backend_->forward_without_output(*step);
            std::lock_guard<std::mutex> lock(mutex_);
            stats_.iterations += 1;
        }
    } catch (const std::exception& e) {
        comm_->abort(std::string("iteration failed on a follower: ") + e.what());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    response_cv_.notify_all();
}

void Executor::step() {
    const auto step_start = Clock::now();
    const ModelInfo& info = model_->info();
    Schedule schedule = scheduler_->schedule(waiting_, running_, *kv_);
    if (schedule.scheduled.empty()) {
        // Nothing fits this iteration (only possible while blocks are pinned by cached prefixes
        // being released); yield briefly instead of spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return;
    }

    StepInput input;
    int max_blocks = 0;
    for (const ScheduledRequest& s : schedule.scheduled) {
        Request& r = *s.request;
        if (!r.started) {
            r.started = true;
            r.num_reused_tokens = r.num_computed;
        }
        if (r.spec.return_context_logits && r.num_computed == 0) context_logits_.erase(r.id);  // (re)computing from the start
        max_blocks = std::max(max_blocks, static_cast<int>(kv_->block_table(s.request->id).size()));
    }
    input.max_blocks_per_seq = max_blocks;
    std::vector<int> sample_row(schedule.scheduled.size(), -1);
    std::vector<int> context_row_start(schedule.scheduled.size(), -1);
    for (size_t i = 0; i < schedule.scheduled.size(); ++i) {
        const ScheduledRequest& s = schedule.scheduled[i];
        const Request& r = *s.request;
        const int start = static_cast<int>(input.input_ids.size());
        input.past_len.push_back(r.num_computed);
        input.new_len.push_back(s.num_new_tokens);
        input.token_start.push_back(start);
        for (int t = 0; t < s.num_new_tokens; ++t) {
            input.input_ids.push_back(r.tokens[r.num_computed + t]);
            input.position_ids.push_back(r.num_computed + t);
        }
        const auto& table = kv_->block_table(r.id);
        input.block_table.insert(input.block_table.end(), table.begin(), table.end());
        input.block_table.resize(static_cast<size_t>(max_blocks) * (i + 1), 0);
        const bool reaches_end = r.num_computed + s.num_new_tokens == static_cast<int>(r.tokens.size());
        if (r.spec.return_context_logits && r.num_computed < r.num_prompt) {
            // Every prompt token of this chunk; the last one doubles as the sampling row.
            context_row_start[i] = static_cast<int>(input.output_rows.size());
            for (int t = 0; t < s.num_new_tokens; ++t) input.output_rows.push_back(start + t);
            if (reaches_end) sample_row[i] = static_cast<int>(input.output_rows.size()) - 1;
        } else if (reaches_end) {
            sample_row[i] = static_cast<int>(input.output_rows.size());
            input.output_rows.push_back(start + s.num_new_tokens - 1);
        }
    }
    if (input.output_rows.empty()) input.output_rows.push_back(0);  // the op list always gathers >= 1 row

    const auto broadcast_start = Clock::now();
    if (comm_) broadcast_step(*comm_, input);
    const auto broadcast_end = Clock::now();
    // Banned tokens per request (end_id and stop ids until min_new_tokens are out).
    auto banned_tokens = [](const Request& r) {
        std::vector<int32_t> banned;
        if (r.num_generated() < r.spec.min_new_tokens) {
            if (r.spec.end_id >= 0) banned.push_back(r.spec.end_id);
            banned.insert(banned.end(), r.spec.stop_token_ids.begin(), r.spec.stop_token_ids.end());
        }
        return banned;
    };
    // Without penalties, bans, top logprobs or logits to return, a backend that samples on the
    // device does (greedy, temperature, top_k, top_p, min_p) and copies no logits back.
    bool on_device = backend_->samples_on_device();
    for (size_t i = 0; on_device && i < schedule.scheduled.size(); ++i) {
        const Request& r = *schedule.scheduled[i].request;
        const SamplingConfig& c = r.spec.sampling;
        on_device = context_row_start[i] < 0 &&
                    (sample_row[i] < 0 ||
                     (c.repetition_penalty == 1.0f && c.presence_penalty == 0.0f && c.frequency_penalty == 0.0f &&
                      c.num_logprobs <= 0 && !r.spec.return_generation_logits && banned_tokens(r).empty()));
    }
    const kernels::RowSample* device_samples = nullptr;
    const auto forward_start = Clock::now();
    if (on_device) {
        std::vector<kernels::RowSampling> rows(input.output_rows.size());  // rows nobody samples: greedy
        for (size_t i = 0; i < schedule.scheduled.size(); ++i) {
            if (sample_row[i] < 0) continue;
            Request& r = *schedule.scheduled[i].request;
            const SamplingConfig& c = r.spec.sampling;
            // The uniform comes from the request's stream exactly as the CPU sampler takes it.
            const double u = c.temperature == 0.0f ? 0.0 : draw_uniform(r.rng);
            rows[static_cast<size_t>(sample_row[i])] = {c.temperature, c.top_k, c.top_p, c.min_p, u,
                                                        c.num_logprobs == 0 ? 1 : 0};
        }
        device_samples = backend_->forward_sample(input, rows);
    }
    const float* logits = device_samples == nullptr ? backend_->forward(input) : nullptr;
    const auto forward_end = Clock::now();
    const int64_t row_stride = info.vocab_size_padded;
    const int vocab = info.vocab_size;

    int64_t generated = 0, prompt_computed = 0;
    std::vector<Response> responses;  // handed out with this step's stats, below
    for (size_t i = 0; i < schedule.scheduled.size(); ++i) {
        Request& r = *schedule.scheduled[i].request;
        const int n = schedule.scheduled[i].num_new_tokens;
        if (context_row_start[i] >= 0) {
            auto& ctx = context_logits_[r.id];
            const int prompt_rows = std::min(n, r.num_prompt - r.num_computed);
            for (int t = 0; t < prompt_rows; ++t) {
                const float* row = logits + (context_row_start[i] + t) * row_stride;
                ctx.insert(ctx.end(), row, row + vocab);
            }
        }
        prompt_computed += std::max(0, std::min(r.num_computed + n, r.num_prompt) - r.num_computed);
        r.num_computed += n;
        kv_->commit(r.id, r.tokens, r.num_computed);
        if (sample_row[i] < 0) continue;

        const float* row = logits == nullptr ? nullptr : logits + sample_row[i] * row_stride;
        SampledToken sampled;
        if (row == nullptr) {
            const kernels::RowSample& picked = device_samples[sample_row[i]];
            if (picked.token == kernels::kPosInfLogit) throw std::invalid_argument("sampling: logits contain +inf");
            if (picked.token < 0) throw std::invalid_argument("no token can be drawn (every logit is -inf or NaN)");
            sampled.token = picked.token;
            sampled.logprob = picked.logprob;
        } else {
            sampled = sample_token(row, vocab, r.spec.sampling, r.tokens, r.num_prompt, banned_tokens(r), r.rng);
        }
        if (r.num_generated() == 0) r.first_token_time = Clock::now();
        r.tokens.push_back(sampled.token);
        ++generated;

        Response response;
        response.request_id = r.id;
        response.tokens.push_back(sampled.token);
        if (r.spec.sampling.num_logprobs >= 0) {
            response.logprobs.push_back(sampled.logprob);
            response.top_logprobs.push_back(std::move(sampled.top_logprobs));
        }
        if (r.spec.return_generation_logits) response.generation_logits.assign(row, row + vocab);
        auto ctx = context_logits_.find(r.id);
        if (ctx != context_logits_.end()) {
            response.context_logits = std::move(ctx->second);
            context_logits_.erase(ctx);
        }

        FinishReason reason = FinishReason::kNone;
        if (sampled.token == r.spec.end_id) {
            reason = FinishReason::kEndId;
        } else if (std::find(r.spec.stop_token_ids.begin(), r.spec.stop_token_ids.end(), sampled.token) !=
                   r.spec.stop_token_ids.end()) {
            reason = FinishReason::kStopToken;
        } else if (std::any_of(r.spec.stop_sequences.begin(), r.spec.stop_sequences.end(),
                               [&](const auto& seq) { return ends_with(r.tokens, r.num_prompt, seq); })) {
            reason = FinishReason::kStopSequence;
        } else if (r.num_generated() >= r.spec.max_new_tokens) {
            reason = FinishReason::kLength;
        }
        if (reason != FinishReason::kNone) {
            finish(r, reason, response);
            running_.erase(std::remove(running_.begin(), running_.end(), &r), running_.end());
        }
        responses.push_back(std::move(response));
        if (reason != FinishReason::kNone) requests_.erase(r.id);
    }

    // Stats first, in the same critical section: a caller that has this step's tokens sees its stats.
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.iterations += 1;
    stats_.generated_tokens += generated;
    stats_.prompt_tokens_computed += prompt_computed;
    stats_.num_waiting = static_cast<int64_t>(waiting_.size());
    stats_.num_running = static_cast<int64_t>(running_.size());
    stats_.kv = kv_->stats();
    const double forward_seconds = std::chrono::duration<double>(forward_end - forward_start).count();
    stats_.forward_seconds += forward_seconds;
    if (prompt_computed == 0) {
        stats_.decode_iterations += 1;
        stats_.decode_forward_seconds += forward_seconds;
    }
    stats_.broadcast_seconds += std::chrono::duration<double>(broadcast_end - broadcast_start).count();
    stats_.step_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();
    for (Response& response : responses) responses_.push_back(std::move(response));
    response_cv_.notify_all();
}

}  // namespace trtllm
