// Python surface of the sampler: SamplingConfig, validate_sampling, sample_token and Rng.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "trtllm/request.h"
#include "trtllm/sampler.h"

namespace py = pybind11;

namespace {

// A request's generator, so tests can draw a sequence of tokens from one stream.
struct Rng {
    std::mt19937_64 engine;
    explicit Rng(uint64_t seed) : engine(seed) {}
};

trtllm::SampledToken sample(py::array_t<float, py::array::c_style> logits,
                            const trtllm::SamplingConfig& config,
                            const std::vector<int32_t>& tokens, int num_prompt,
                            const std::vector<int32_t>& banned, std::mt19937_64& rng) {
    if (logits.ndim() != 1) {
        throw py::value_error("sample_token: logits must be 1-D, got " +
                              std::to_string(logits.ndim()) + " dimensions");
    }
    if (logits.shape(0) > INT32_MAX) throw py::value_error("sample_token: vocabulary too large");
    const float* data = logits.data();
    const int vocab_size = static_cast<int>(logits.shape(0));
    py::gil_scoped_release release;
    return trtllm::sample_token(data, vocab_size, config, tokens, num_prompt, banned, rng);
}

}  // namespace

void bind_sampler(py::module_& m) {
    using trtllm::SamplingConfig;

    py::class_<SamplingConfig>(m, "SamplingConfig",
                               "Sampling parameters of one request; defaults give greedy decoding.")
        .def(py::init([](float temperature, int top_k, float top_p, float min_p,
                         float repetition_penalty, float presence_penalty,
                         float frequency_penalty, std::optional<uint64_t> seed,
                         int num_logprobs) {
                 SamplingConfig c;
                 c.temperature = temperature;
                 c.top_k = top_k;
                 c.top_p = top_p;
                 c.min_p = min_p;
                 c.repetition_penalty = repetition_penalty;
                 c.presence_penalty = presence_penalty;
                 c.frequency_penalty = frequency_penalty;
                 c.has_seed = seed.has_value();
                 c.seed = seed.value_or(0);
                 c.num_logprobs = num_logprobs;
                 return c;
             }),
             py::kw_only(), py::arg("temperature") = 0.0f, py::arg("top_k") = 0,
             py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
             py::arg("repetition_penalty") = 1.0f, py::arg("presence_penalty") = 0.0f,
             py::arg("frequency_penalty") = 0.0f, py::arg("seed") = py::none(),
             py::arg("num_logprobs") = -1)
        .def_readwrite("temperature", &SamplingConfig::temperature)
        .def_readwrite("top_k", &SamplingConfig::top_k)
        .def_readwrite("top_p", &SamplingConfig::top_p)
        .def_readwrite("min_p", &SamplingConfig::min_p)
        .def_readwrite("repetition_penalty", &SamplingConfig::repetition_penalty)
        .def_readwrite("presence_penalty", &SamplingConfig::presence_penalty)
        .def_readwrite("frequency_penalty", &SamplingConfig::frequency_penalty)
        .def_readwrite("seed", &SamplingConfig::seed)
        .def_readwrite("has_seed", &SamplingConfig::has_seed)
        .def_readwrite("num_logprobs", &SamplingConfig::num_logprobs)
        .def("__repr__", [](const SamplingConfig& c) {
            std::ostringstream s;
            s << "SamplingConfig(temperature=" << c.temperature << ", top_k=" << c.top_k
              << ", top_p=" << c.top_p << ", min_p=" << c.min_p
              << ", repetition_penalty=" << c.repetition_penalty
              << ", presence_penalty=" << c.presence_penalty
              << ", frequency_penalty=" << c.frequency_penalty << ", seed=";
            if (c.has_seed) {
                s << c.seed;
            } else {
                s << "None";
            }
            s << ", num_logprobs=" << c.num_logprobs << ")";
            return s.str();
        });

    py::class_<trtllm::SampledToken>(m, "SampledToken")
        .def_readonly("token", &trtllm::SampledToken::token)
        .def_readonly("logprob", &trtllm::SampledToken::logprob,
                      "log_softmax of the raw logits at `token` (0 when not asked)")
        .def_readonly("top_logprobs", &trtllm::SampledToken::top_logprobs,
                      "[(token, logprob)] of the raw logits, best first");

    py::class_<Rng>(m, "Rng", "std::mt19937_64, the per-request generator of the sampler.")
        .def(py::init<uint64_t>(), py::arg("seed"))
        .def("next", [](Rng& r) { return r.engine(); }, "The next raw 64-bit output.")
        .def("uniform", [](Rng& r) { return static_cast<double>(r.engine() >> 11) * 0x1.0p-53; },
             "The sampler's uniform double in [0, 1): (next() >> 11) * 2**-53.");

    m.def("validate_sampling", &trtllm::validate_sampling, py::arg("config"),
          "'' when the config is valid, else a message naming the bad field and its range.");

    const char* sample_doc =
        "Samples one token from a float32 logits row (trtllm::sample_token). `rng` is an Rng, "
        "advanced in place, or an int seed for a fresh generator. Raises ValueError for a bad "
        "config or when every token is banned, IndexError for a token id outside the vocabulary.";
    m.def(
        "sample_token",
        [](py::array_t<float, py::array::c_style> logits, const SamplingConfig& config,
           const std::vector<int32_t>& tokens, int num_prompt, const std::vector<int32_t>& banned,
           Rng& rng) { return sample(logits, config, tokens, num_prompt, banned, rng.engine); },
        py::arg("logits"), py::arg("config"), py::arg("tokens") = std::vector<int32_t>{},
        py::arg("num_prompt") = 0, py::arg("banned") = std::vector<int32_t>{},
        py::arg("rng"), sample_doc);
    m.def(
        "sample_token",
        [](py::array_t<float, py::array::c_style> logits, const SamplingConfig& config,
           const std::vector<int32_t>& tokens, int num_prompt, const std::vector<int32_t>& banned,
           uint64_t seed) {
            std::mt19937_64 rng(seed);
            return sample(logits, config, tokens, num_prompt, banned, rng);
        },
        py::arg("logits"), py::arg("config"), py::arg("tokens") = std::vector<int32_t>{},
        py::arg("num_prompt") = 0, py::arg("banned") = std::vector<int32_t>{},
        py::arg("rng") = 0, sample_doc);
}
