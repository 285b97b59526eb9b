// Python surface of the KV cache manager and the scheduler. The scheduler works on Request
// pointers owned by the executor; SchedulerHarness stands in for the executor so tests can drive
// whole request lifetimes (schedule, compute, sample, finish) from Python without a model.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "trtllm/kv_cache.h"
#include "trtllm/request.h"
#include "trtllm/scheduler.h"

namespace py = pybind11;

namespace trtllm {
namespace {

class SchedulerHarness {
public:
    SchedulerHarness(const SchedulerConfig& config, KVCacheManager& kv) : scheduler_(config), kv_(kv) {}

    void add_request(int64_t id, std::vector<int32_t> prompt, int max_new_tokens) {
        if (requests_.count(id) != 0) {
            throw std::invalid_argument("SchedulerHarness: request id " + std::to_string(id) + " already added");
        }
        if (prompt.empty() || max_new_tokens < 1) {
            throw std::invalid_argument("SchedulerHarness: request " + std::to_string(id) +
                                        " needs a non-empty prompt and max_new_tokens >= 1");
        }
        auto r = std::make_unique<Request>();
        r->id = id;
        r->spec.prompt = prompt;
        r->spec.max_new_tokens = max_new_tokens;
        r->tokens = std::move(prompt);
        r->num_prompt = static_cast<int>(r->tokens.size());
        r->arrival = next_arrival_++;
        waiting_.push_back(r.get());
        requests_.emplace(id, std::move(r));
    }

    // One iteration's plan: [(id, num_new_tokens)] in batch order, and the ids preempted.
    std::pair<std::vector<std::pair<int64_t, int>>, std::vector<int64_t>> schedule() {
        const Schedule s = scheduler_.schedule(waiting_, running_, kv_);
        std::pair<std::vector<std::pair<int64_t, int>>, std::vector<int64_t>> out;
        for (const ScheduledRequest& sr : s.scheduled) out.first.emplace_back(sr.request->id, sr.num_new_tokens);
        for (const Request* r : s.preempted) out.second.push_back(r->id);
        return out;
    }

    // The executor ran `num_tokens` more of the request's tokens: they are now in the KV cache.
    // Returns true when it reached the last token, i.e. a token must now be sampled.
    bool advance(int64_t id, int num_tokens) {
        Request& r = running_request(id, "advance");
        if (num_tokens < 1 || num_tokens > r.num_remaining()) {
            throw std::invalid_argument("SchedulerHarness.advance: request " + std::to_string(id) + " has " +
                                        std::to_string(r.num_remaining()) + " tokens to compute, got " +
                                        std::to_string(num_tokens));
        }
        r.num_computed += num_tokens;
        kv_.commit(id, r.tokens, r.num_computed);
        return r.num_remaining() == 0;
    }

    // The sampler produced `token`. Finishes the request (freeing its blocks) once it has
    // max_new_tokens; returns whether it finished.
    bool complete(int64_t id, int32_t token) {
        Request& r = running_request(id, "complete");
        if (r.num_remaining() != 0) {
            throw std::invalid_argument("SchedulerHarness.complete: request " + std::to_string(id) + " still has " +
                                        std::to_string(r.num_remaining()) + " tokens to compute");
        }
        r.tokens.push_back(token);
        if (r.num_generated() < r.spec.max_new_tokens) return false;
        r.finish = FinishReason::kLength;
        kv_.free_sequence(id);
        running_.erase(std::find(running_.begin(), running_.end(), &r));
        return true;
    }

    const Request& request(int64_t id) const {
        auto it = requests_.find(id);
        if (it == requests_.end()) {
            throw std::invalid_argument("SchedulerHarness: unknown request id " + std::to_string(id));
        }
        return *it->second;
    }

    std::vector<int64_t> waiting_ids() const { return ids(waiting_.begin(), waiting_.end()); }
    std::vector<int64_t> running_ids() const { return ids(running_.begin(), running_.end()); }
    bool all_finished() const { return waiting_.empty() && running_.empty(); }

private:
    Request& running_request(int64_t id, const char* caller) {
        const Request& r = request(id);
        if (std::find(running_.begin(), running_.end(), &r) == running_.end()) {
            throw std::invalid_argument(std::string("SchedulerHarness.") + caller + ": request " +
                                        std::to_string(id) + " is not running");
        }
        return const_cast<Request&>(r);
    }

    template <typename It>
    static std::vector<int64_t> ids(It first, It last) {
        std::vector<int64_t> out;
        for (; first != last; ++first) out.push_back((*first)->id);
        return out;
    }

    Scheduler scheduler_;
    KVCacheManager& kv_;  // kept alive by the Python object (keep_alive in the binding)
    std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;
    std::deque<Request*> waiting_;
    std::vector<Request*> running_;
    int64_t next_arrival_ = 0;
};

}  // namespace
}  // namespace trtllm

void bind_kvsched(py::module_& m) {
    using namespace trtllm;

    py::class_<KVCacheConfig>(m, "KVCacheConfig")
        .def(py::init([](int tokens_per_block, int64_t num_blocks, bool enable_prefix_reuse) {
                 return KVCacheConfig{tokens_per_block, num_blocks, enable_prefix_reuse};
             }),
             py::arg("tokens_per_block") = 32, py::arg("num_blocks") = 0, py::arg("enable_prefix_reuse") = true)
        .def_readwrite("tokens_per_block", &KVCacheConfig::tokens_per_block)
        .def_readwrite("num_blocks", &KVCacheConfig::num_blocks)
        .def_readwrite("enable_prefix_reuse", &KVCacheConfig::enable_prefix_reuse);

    py::class_<KVCacheStats>(m, "KVCacheStats")
        .def_readonly("num_blocks", &KVCacheStats::num_blocks)
        .def_readonly("free_blocks", &KVCacheStats::free_blocks)
        .def_readonly("used_blocks", &KVCacheStats::used_blocks)
        .def_readonly("cached_blocks", &KVCacheStats::cached_blocks)
        .def_readonly("reused_tokens", &KVCacheStats::reused_tokens)
        .def_readonly("evictions", &KVCacheStats::evictions)
        .def("__repr__", [](const KVCacheStats& s) {
            return "KVCacheStats(num_blocks=" + std::to_string(s.num_blocks) +
                   ", free_blocks=" + std::to_string(s.free_blocks) +
                   ", used_blocks=" + std::to_string(s.used_blocks) +
                   ", cached_blocks=" + std::to_string(s.cached_blocks) +
                   ", reused_tokens=" + std::to_string(s.reused_tokens) +
                   ", evictions=" + std::to_string(s.evictions) + ")";
        });

    py::class_<KVCacheManager>(m, "KVCacheManager", "Paged KV cache bookkeeping: block ids, tables, prefix reuse.")
        .def(py::init<const KVCacheConfig&>(), py::arg("config"))
        .def("add_sequence", &KVCacheManager::add_sequence, py::arg("seq_id"), py::arg("tokens"),
             py::arg("allow_reuse") = true)
        .def("reserve", &KVCacheManager::reserve, py::arg("seq_id"), py::arg("num_tokens"))
        .def("blocks_needed", &KVCacheManager::blocks_needed, py::arg("seq_id"), py::arg("num_tokens"))
        .def("num_reusable_tokens", &KVCacheManager::num_reusable_tokens, py::arg("tokens"),
             py::arg("allow_reuse") = true)
        .def("blocks_needed_to_add", &KVCacheManager::blocks_needed_to_add, py::arg("tokens"),
             py::arg("num_tokens"), py::arg("allow_reuse") = true)
        .def("commit", &KVCacheManager::commit, py::arg("seq_id"), py::arg("tokens"), py::arg("num_computed"))
        .def("free_sequence", &KVCacheManager::free_sequence, py::arg("seq_id"))
        .def("has_sequence", &KVCacheManager::has_sequence, py::arg("seq_id"))
        .def("block_table", &KVCacheManager::block_table, py::arg("seq_id"))  // copied to a list
        .def("ref_count", &KVCacheManager::ref_count, py::arg("block_id"))
        .def_property_readonly("tokens_per_block", &KVCacheManager::tokens_per_block)
        .def_property_readonly("num_blocks", &KVCacheManager::num_blocks)
        .def_property_readonly("num_available_blocks", &KVCacheManager::num_available_blocks)
        .def("stats", &KVCacheManager::stats);

    py::enum_<SchedulerPolicy>(m, "SchedulerPolicy")
        .value("MAX_UTILIZATION", SchedulerPolicy::kMaxUtilization)
        .value("GUARANTEED_NO_EVICT", SchedulerPolicy::kGuaranteedNoEvict);

    py::class_<SchedulerConfig>(m, "SchedulerConfig")
        .def(py::init([](int max_batch_size, int max_num_tokens, SchedulerPolicy policy, bool enable_chunked_context) {
                 return SchedulerConfig{max_batch_size, max_num_tokens, policy, enable_chunked_context};
             }),
             py::arg("max_batch_size") = 64, py::arg("max_num_tokens") = 4096,
             py::arg("policy") = SchedulerPolicy::kMaxUtilization, py::arg("enable_chunked_context") = true)
        .def_readwrite("max_batch_size", &SchedulerConfig::max_batch_size)
        .def_readwrite("max_num_tokens", &SchedulerConfig::max_num_tokens)
        .def_readwrite("policy", &SchedulerConfig::policy)
        .def_readwrite("enable_chunked_context", &SchedulerConfig::enable_chunked_context);

    // Read-only view of a harness-owned request.
    py::class_<Request>(m, "Request")
        .def_readonly("id", &Request::id)
        .def_readonly("tokens", &Request::tokens)
        .def_readonly("num_prompt", &Request::num_prompt)
        .def_readonly("num_computed", &Request::num_computed)
        .def_readonly("num_preemptions", &Request::num_preemptions)
        .def_property_readonly("max_new_tokens", [](const Request& r) { return r.spec.max_new_tokens; })
        .def_property_readonly("num_generated", &Request::num_generated)
        .def_property_readonly("num_remaining", &Request::num_remaining)
        .def_property_readonly("finished", &Request::finished);

    py::class_<SchedulerHarness>(m, "SchedulerHarness",
                                 "Test stand-in for the executor: owns requests, drives a Scheduler.")
        .def(py::init<const SchedulerConfig&, KVCacheManager&>(), py::arg("config"), py::arg("kv"),
             py::keep_alive<1, 3>())
        .def("add_request", &SchedulerHarness::add_request, py::arg("id"), py::arg("prompt"),
             py::arg("max_new_tokens"))
        .def("schedule", &SchedulerHarness::schedule,
             "One iteration: ([(id, num_new_tokens)] in batch order, [preempted ids]).")
        .def("advance", &SchedulerHarness::advance, py::arg("id"), py::arg("num_tokens"))
        .def("complete", &SchedulerHarness::complete, py::arg("id"), py::arg("token"))
        .def("request", &SchedulerHarness::request, py::arg("id"), py::return_value_policy::reference_internal)
        .def("waiting_ids", &SchedulerHarness::waiting_ids)
        .def("running_ids", &SchedulerHarness::running_ids)
        .def("all_finished", &SchedulerHarness::all_finished);
}
