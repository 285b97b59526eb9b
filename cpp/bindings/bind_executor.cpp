// Python surface of the executor: trtllm_runtime._core.Executor. Requests go in as keyword
// arguments; responses come out as dicts with numpy arrays. The GIL is released while waiting.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <set>
#include <string>
#include <type_traits>

#include "trtllm/executor.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

const char* finish_reason_name(trtllm::FinishReason r) {
    switch (r) {
        case trtllm::FinishReason::kNone: return "";
        case trtllm::FinishReason::kLength: return "length";
        case trtllm::FinishReason::kEndId: return "end_id";
        case trtllm::FinishReason::kStopToken: return "stop_token";
        case trtllm::FinishReason::kStopSequence: return "stop_sequence";
        case trtllm::FinishReason::kCancelled: return "cancelled";
    }
    return "";
}

py::array_t<float> matrix(const std::vector<float>& data, int64_t cols) {
    const int64_t rows = cols > 0 ? static_cast<int64_t>(data.size()) / cols : 0;
    py::array_t<float> out({rows, cols});
    std::copy(data.begin(), data.end(), out.mutable_data());
    return out;
}

py::dict response_to_dict(const trtllm::Response& r, int64_t vocab) {
    py::dict d("request_id"_a = r.request_id, "tokens"_a = r.tokens, "finished"_a = r.finished,
               "finish_reason"_a = finish_reason_name(r.finish_reason), "error"_a = r.error);
    if (!r.logprobs.empty()) {
        d["logprobs"] = r.logprobs;
        d["top_logprobs"] = r.top_logprobs;
    }
    if (!r.context_logits.empty()) d["context_logits"] = matrix(r.context_logits, vocab);
    if (!r.generation_logits.empty()) d["generation_logits"] = matrix(r.generation_logits, vocab);
    if (r.finished) {
        d["time_to_first_token_s"] = r.time_to_first_token_s;
        d["total_time_s"] = r.total_time_s;
        d["num_prompt_tokens"] = r.num_prompt_tokens;
        d["num_generated_tokens"] = r.num_generated_tokens;
        d["num_reused_tokens"] = r.num_reused_tokens;
        d["num_preemptions"] = r.num_preemptions;
    }
    return d;
}

trtllm::SchedulerPolicy parse_policy(const std::string& name) {
    if (name == "max_utilization") return trtllm::SchedulerPolicy::kMaxUtilization;
    if (name == "guaranteed_no_evict") return trtllm::SchedulerPolicy::kGuaranteedNoEvict;
    throw std::invalid_argument("scheduler_policy must be 'max_utilization' or 'guaranteed_no_evict', got '" + name + "'");
}

// A RequestSpec from a prompt and enqueue's keyword arguments; a keyword no field reads is a
// TypeError, as for any Python function.
trtllm::RequestSpec request_spec(std::vector<int32_t> prompt, const py::dict& kw) {
    trtllm::RequestSpec spec;  // its defaults stand for what is not given (or None)
    spec.prompt = std::move(prompt);
    std::set<std::string> known;
    const auto set = [&](const char* key, auto& field) {
        known.insert(key);
        if (kw.contains(key) && !kw[key].is_none()) field = kw[key].cast<std::remove_reference_t<decltype(field)>>();
    };
    set("max_new_tokens", spec.max_new_tokens);
    set("min_new_tokens", spec.min_new_tokens);
    set("end_id", spec.end_id);
    set("stop_token_ids", spec.stop_token_ids);
    set("stop_sequences", spec.stop_sequences);
    set("temperature", spec.sampling.temperature);
    set("top_k", spec.sampling.top_k);
    set("top_p", spec.sampling.top_p);
    set("min_p", spec.sampling.min_p);
    set("repetition_penalty", spec.sampling.repetition_penalty);
    set("presence_penalty", spec.sampling.presence_penalty);
    set("frequency_penalty", spec.sampling.frequency_penalty);
    set("seed", spec.sampling.seed);
    spec.sampling.has_seed = kw.contains("seed") && !kw["seed"].is_none();
    set("num_logprobs", spec.sampling.num_logprobs);
    set("return_context_logits", spec.return_context_logits);
    set("return_generation_logits", spec.return_generation_logits);
    for (const auto& item : kw) {
        const auto key = item.first.cast<std::string>();
        if (known.count(key) == 0) throw py::type_error("enqueue() got an unexpected keyword argument '" + key + "'");
    }
    return spec;
}

}  // namespace

void bind_executor(py::module_& m) {
    py::class_<trtllm::Executor>(m, "Executor", "The C++ executor: in-flight batching over a paged KV cache.")
        .def(py::init([](const std::string& engine_path, int tokens_per_block, int64_t kv_cache_bytes,
                         double free_memory_fraction, bool enable_prefix_reuse, bool enable_chunked_context,
                         const std::string& scheduler_policy, int max_batch_size, int max_num_tokens,
                         double free_gpu_memory_fraction, std::shared_ptr<trtllm::MpiComm> comm) {
                 trtllm::ExecutorConfig c;
                 c.tokens_per_block = tokens_per_block;
                 c.kv_cache_bytes = kv_cache_bytes;
                 c.free_memory_fraction = free_memory_fraction;
                 c.enable_prefix_reuse = enable_prefix_reuse;
                 c.enable_chunked_context = enable_chunked_context;
                 c.policy = parse_policy(scheduler_policy);
                 c.max_batch_size = max_batch_size;
                 c.max_num_tokens = max_num_tokens;
                 c.free_gpu_memory_fraction = free_gpu_memory_fraction;
                 py::gil_scoped_release release;
                 return std::make_unique<trtllm::Executor>(engine_path, c, std::move(comm));
             }),
             py::arg("engine_path"), py::arg("tokens_per_block") = 32, py::arg("kv_cache_bytes") = 0,
             py::arg("free_memory_fraction") = 0.5, py::arg("enable_prefix_reuse") = true,
             py::arg("enable_chunked_context") = true, py::arg("scheduler_policy") = "max_utilization",
             py::arg("max_batch_size") = 0, py::arg("max_num_tokens") = 0,
             py::arg("free_gpu_memory_fraction") = 0.9, py::arg("comm") = py::none(),
             "With comm (tensor parallelism), every rank constructs one on its own rank's engine file; "
             "rank 0 leads, the others follow (see trtllm/executor.h).")
        .def(
            "enqueue",
            [](trtllm::Executor& e, std::vector<int32_t> prompt, const py::kwargs& request) {
                return e.enqueue(request_spec(std::move(prompt), request));
            },
            py::arg("prompt"),
            "Queue one request; keyword arguments (all optional): max_new_tokens=16, min_new_tokens=0, end_id=-1, "
            "stop_token_ids, stop_sequences, temperature=0, top_k=0, top_p=1, min_p=0, repetition_penalty=1, "
            "presence_penalty=0, frequency_penalty=0, seed=None, num_logprobs=-1, return_context_logits=False, "
            "return_generation_logits=False. Returns the request id.")
        .def(
            "enqueue_batch",
            [](trtllm::Executor& e, const py::list& requests) {
                std::vector<trtllm::RequestSpec> specs;
                for (const auto& item : requests) {
                    const auto request = item.cast<py::dict>();
                    if (!request.contains("prompt")) throw py::type_error("enqueue_batch: a request without 'prompt'");
                    py::dict rest;
                    for (const auto& [key, value] : request) {
                        if (key.cast<std::string>() != "prompt") rest[key] = value;
                    }
                    specs.push_back(request_spec(request["prompt"].cast<std::vector<int32_t>>(), rest));
                }
                return e.enqueue_batch(specs);
            },
            py::arg("requests"),
            "Queue the requests (dicts: 'prompt' and enqueue's keyword arguments) at once: the scheduler sees "
            "them together. A bad one queues none (ValueError naming it). Returns their ids in order.")
        .def("cancel", &trtllm::Executor::cancel, py::arg("request_id"))
        .def(
            "await_responses",
            [](trtllm::Executor& e, double timeout_s) {
                std::vector<trtllm::Response> responses;
                {
                    py::gil_scoped_release release;
                    responses = e.await_responses(timeout_s);
                }
                py::list out;
                for (const auto& r : responses) out.append(response_to_dict(r, e.model_info().vocab_size));
                return out;
            },
            py::arg("timeout_s") = 0.1)
        .def("shutdown", &trtllm::Executor::shutdown, py::call_guard<py::gil_scoped_release>())
        .def("stats",
             [](const trtllm::Executor& e) {
                 const trtllm::ExecutorStats s = e.stats();
                 return py::dict("iterations"_a = s.iterations, "num_waiting"_a = s.num_waiting,
                                 "num_running"_a = s.num_running, "generated_tokens"_a = s.generated_tokens,
                                 "prompt_tokens_computed"_a = s.prompt_tokens_computed,
                                 "kv_cache_bytes"_a = s.kv_cache_bytes, "kv_blocks_total"_a = s.kv.num_blocks,
                                 "kv_blocks_free"_a = s.kv.free_blocks, "kv_blocks_used"_a = s.kv.used_blocks,
                                 "kv_blocks_cached"_a = s.kv.cached_blocks, "kv_reused_tokens"_a = s.kv.reused_tokens,
                                 "kv_evictions"_a = s.kv.evictions, "step_seconds"_a = s.step_seconds,
                                 "forward_seconds"_a = s.forward_seconds, "decode_iterations"_a = s.decode_iterations,
                                 "decode_forward_seconds"_a = s.decode_forward_seconds,
                                 "broadcast_seconds"_a = s.broadcast_seconds);
             })
        .def_property_readonly("num_kv_blocks", &trtllm::Executor::num_kv_blocks)
        .def_property_readonly("is_leader", &trtllm::Executor::is_leader)
        .def_property_readonly("model_info", [](const trtllm::Executor& e) {
            const trtllm::ModelInfo& i = e.model_info();
            return py::dict("architecture"_a = i.architecture, "dtype"_a = trtllm::dtype_name(i.dtype),
                            "vocab_size"_a = i.vocab_size, "vocab_size_padded"_a = i.vocab_size_padded,
                            "hidden_size"_a = i.hidden_size, "num_layers"_a = i.num_layers,
                            "tp_size"_a = i.tp_size, "tp_rank"_a = i.tp_rank, "max_batch_size"_a = i.max_batch_size,
                            "max_num_tokens"_a = i.max_num_tokens, "max_seq_len"_a = i.max_seq_len,
                            "gather_context_logits"_a = i.gather_context_logits, "target"_a = i.target);
        });
}
