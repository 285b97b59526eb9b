// CPU reference sampler. Order of operations follows HF transformers' logits processors and
// vLLM's sampler: penalties, banned tokens, then temperature, top_k, top_p, min_p, draw.
#include "trtllm/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace trtllm {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Candidate {
    float logit;  // after penalties, before temperature: the sort key (exact, no rounding ties)
    int32_t id;
    double weight;  // exp((logit - max_logit) / temperature): unnormalized probability
};

// The one total order every step uses: more likely first, ties to the lower token id. Being a
// total order, the sorted sequence is unique whatever sort algorithm the platform's library has.
bool more_likely(const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Per-thread buffers, so a call allocates only when the vocabulary grows. `counts` is all zeros
// between calls (each call clears what it set).
struct Scratch {
    std::vector<float> logits;
    std::vector<int32_t> counts;
    std::vector<Candidate> candidates;
};

Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

template <typename T>
std::string out_of_range(const char* field, T value, const char* range) {
    std::ostringstream msg;
    msg << field << " must be in " << range << ", got " << value;
    return msg.str();
}

// Keeps candidates[0, sorted) sorted and no less likely than anything after it, growing the
// sorted prefix on demand one weight band at a time: a partition pass moves the tokens with
// weight >= 2^-4, then >= 2^-8, ... (the max has weight 1) to the front and only they get sorted.
// Peaked LLM distributions put nearly all the mass in the first band or two, so top_p and the
// draw usually sort a few hundred tokens, not the vocabulary. Band membership depends only on
// the weights, so the order of the walk (and its sums) is the same on every platform.
class SortedPrefix {
public:
    SortedPrefix(std::vector<Candidate>& candidates, size_t size, size_t sorted)
        : c_(candidates), size_(size), sorted_(sorted) {}

    const Candidate& at(size_t i) {
        while (i >= sorted_) grow();
        return c_[i];
    }

private:
    void grow() {
        band_exponent_ += 4;
        // Past 2^-1076 every weight qualifies (the smallest double is 2^-1074).
        const double min_weight = band_exponent_ > 1076 ? 0.0 : std::ldexp(1.0, -band_exponent_);
        auto first = c_.begin() + static_cast<std::ptrdiff_t>(sorted_);
        auto last = c_.begin() + static_cast<std::ptrdiff_t>(size_);
        auto mid = std::partition(first, last,
                                  [&](const Candidate& c) { return c.weight >= min_weight; });
        std::sort(first, mid, more_likely);
        sorted_ = static_cast<size_t>(mid - c_.begin());
    }

    std::vector<Candidate>& c_;
    size_t size_;
    size_t sorted_;
    int band_exponent_ = 0;
};

// Applies the penalties and bans that apply to `config` into scratch.logits and returns it, or
// returns `logits` untouched when none does (no copy).
const float* penalized_logits(const float* logits, int vocab_size, const SamplingConfig& config,
                              const std::vector<int32_t>& tokens, int num_prompt,
                              const std::vector<int32_t>& banned_tokens, Scratch& s) {
    const bool repetition = config.repetition_penalty != 1.0f;
    const bool occurrence = config.presence_penalty != 0.0f || config.frequency_penalty != 0.0f;
    const bool any_banned = std::any_of(banned_tokens.begin(), banned_tokens.end(),
                                        [&](int32_t t) { return t >= 0 && t < vocab_size; });
    if (!repetition && !occurrence && !any_banned) return logits;

    s.logits.assign(logits, logits + vocab_size);
    float* out = s.logits.data();

    if (repetition) {
        // Reading the original logit makes a repeated token idempotent: each distinct token is
        // penalized once, like HF's gather/scatter in RepetitionPenaltyLogitsProcessor.
        const float p = config.repetition_penalty;
        for (int32_t t : tokens) out[t] = logits[t] > 0.0f ? logits[t] / p : logits[t] * p;
    }
    if (occurrence) {
        if (s.counts.size() < static_cast<size_t>(vocab_size)) s.counts.resize(vocab_size, 0);
        const auto generated = tokens.begin() + num_prompt;
        for (auto it = generated; it != tokens.end(); ++it) ++s.counts[*it];
        // OpenAI: logit - count * frequency - (count > 0) * presence, in vLLM's order.
        for (auto it = generated; it != tokens.end(); ++it) {
            const int32_t count = s.counts[*it];
            if (count == 0) continue;  // already done for an earlier occurrence
            out[*it] -= config.frequency_penalty * static_cast<float>(count);
            out[*it] -= config.presence_penalty;
            s.counts[*it] = 0;
        }
    }
    // Ids outside the vocabulary cannot be drawn anyway (end_id -1 means "none").
    for (int32_t t : banned_tokens) {
        if (t >= 0 && t < vocab_size) out[t] = kNegInf;
    }
    return out;
}

int32_t argmax(const float* logits, int vocab_size) {
    int32_t best = -1;
    float best_logit = kNegInf;
    for (int32_t i = 0; i < vocab_size; ++i) {
        if (logits[i] > best_logit) {  // strict: the lowest id wins ties; NaN never wins
            best_logit = logits[i];
            best = i;
        }
    }
    return best;
}

// Temperature, top_k, top_p, min_p, then one inverse-CDF draw over the kept tokens in token id
// order, the order the GPU sampler walks them in: the same uniform picks the same token on both,
// so a seeded request does not depend on which sampler its step ran on. Returns -1 when no token
// has a finite logit.
int32_t draw(const float* logits, int vocab_size, const SamplingConfig& config,
             std::mt19937_64& rng, Scratch& s) {
    // One draw per sampled token whatever the filters keep, so changing top_k or top_p never
    // shifts the rest of a seeded stream.
    const double u = draw_uniform(rng);

    const double inv_temperature = 1.0 / static_cast<double>(config.temperature);
    auto& cand = s.candidates;
    cand.clear();
    size_t sorted = 0;
    if (config.top_k > 0 && config.top_k < vocab_size) {
        // Exactly top_k tokens; a tie at the boundary goes to the lower id (HF keeps all ties),
        // so top_k = 1 is greedy. A bounded heap whose front is the least likely kept token:
        // most tokens cost one comparison, far cheaper than nth_element over the vocabulary.
        const auto k = static_cast<size_t>(config.top_k);
        cand.reserve(k);
        for (int32_t i = 0; i < vocab_size; ++i) {
            const Candidate c{logits[i], i, 0.0};
            if (!(c.logit > kNegInf)) continue;  // banned (-inf) or NaN
            if (cand.size() < k) {
                cand.push_back(c);
                std::push_heap(cand.begin(), cand.end(), more_likely);
            } else if (more_likely(c, cand.front())) {
                std::pop_heap(cand.begin(), cand.end(), more_likely);
                cand.back() = c;
                std::push_heap(cand.begin(), cand.end(), more_likely);
            }
        }
        std::sort_heap(cand.begin(), cand.end(), more_likely);
        sorted = cand.size();
    } else {
        cand.reserve(static_cast<size_t>(vocab_size));
        for (int32_t i = 0; i < vocab_size; ++i) {
            if (logits[i] > kNegInf) cand.push_back({logits[i], i, 0.0});  // not banned, not NaN
        }
    }
    if (cand.empty()) return -1;
    const size_t n = cand.size();
    float max_logit = kNegInf;
    for (const Candidate& c : cand) max_logit = std::max(max_logit, c.logit);
    if (std::isinf(max_logit)) throw std::invalid_argument("sample_token: logits contain +inf");

    // Sums run in a canonical order (sorted for top_k, token id otherwise) so a seed gives the
    // same token on every platform whose exp() agrees.
    double total = 0.0;
    for (Candidate& c : cand) {
        c.weight = std::exp((static_cast<double>(c.logit) - max_logit) * inv_temperature);
        total += c.weight;
    }
    // min_p before top_p needs no sort: p_i < min_p * p_max  <=>  weight_i < min_p, the max
    // having weight 1, whatever top_k and top_p renormalize. Its survivors are a prefix of the
    // sorted order; their mass is summed here, in the canonical order, while it still holds.
    size_t min_p_kept = n;
    double min_p_total = total;
    if (config.min_p > 0.0f) {
        const double min_weight = static_cast<double>(config.min_p);
        min_p_kept = 0;
        min_p_total = 0.0;
        for (const Candidate& c : cand) {
            if (c.weight >= min_weight) {
                ++min_p_kept;
                min_p_total += c.weight;
            }
        }
    }

    SortedPrefix prefix(cand, n, sorted);
    size_t kept = n;
    double kept_total = total;
    if (config.top_p < 1.0f) {
        // HF's TopPLogitsWarper: keep a token while the mass before it is below top_p (the
        // smallest prefix reaching top_p); the first token always stays.
        const double threshold = static_cast<double>(config.top_p) * total;
        double before = prefix.at(0).weight;
        size_t i = 1;
        while (i < n && before < threshold) before += prefix.at(i++).weight;
        kept = i;
        kept_total = before;
    }
    if (min_p_kept < kept) {
        kept = min_p_kept;
        kept_total = min_p_total;
    }

    // The kept tokens in id order. Without top_k and top_p, `cand` still is in id order and the
    // kept ones are those min_p keeps (if any); otherwise they are the first `kept` of the sorted
    // order, sorted back by id.
    const bool in_id_order = sorted == 0 && config.top_p >= 1.0f;
    const double min_weight = in_id_order && kept < n ? static_cast<double>(config.min_p) : 0.0;
    size_t walk = n;
    if (!in_id_order) {
        prefix.at(kept - 1);  // sorts [0, kept)
        std::sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(kept),
                  [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
        walk = kept;
    }
    const double target = u * kept_total;
    double cumulative = 0.0;
    int32_t last_positive = -1;
    for (size_t i = 0; i < walk; ++i) {
        const Candidate& c = cand[i];
        if (c.weight < min_weight) continue;
        cumulative += c.weight;
        if (target < cumulative) return c.id;
        if (c.weight > 0.0) last_positive = c.id;
    }
    // Only reached when rounding leaves the walked sum a hair below `kept_total`.
    return last_positive;
}

// log_softmax of the raw logits: the sampled token's logprob and the top `k`, best first.
void fill_logprobs(const float* logits, int vocab_size, int k, SampledToken& out) {
    float max_logit = kNegInf;
    for (int32_t i = 0; i < vocab_size; ++i) max_logit = std::max(max_logit, logits[i]);
    double sum = 0.0;
    for (int32_t i = 0; i < vocab_size; ++i) {
        sum += std::exp(static_cast<double>(logits[i]) - max_logit);
    }
    const double log_z = max_logit + std::log(sum);
    out.logprob = static_cast<float>(logits[out.token] - log_z);

    // k <= 20: a small sorted insertion list beats a vocabulary-sized index array.
    auto& top = out.top_logprobs;
    top.clear();
    if (k == 0) return;
    top.reserve(static_cast<size_t>(k) + 1);
    for (int32_t i = 0; i < vocab_size; ++i) {
        const float l = logits[i];
        if (top.size() == static_cast<size_t>(k) && !(l > top.back().second)) continue;
        // Insert after the entries >= l: scanning ids upward keeps ties in ascending id order.
        auto pos = std::upper_bound(top.begin(), top.end(), l,
                                    [](float v, const std::pair<int32_t, float>& e) {
                                        return v > e.second;
                                    });
        top.insert(pos, {i, l});
        if (top.size() > static_cast<size_t>(k)) top.pop_back();
    }
    for (auto& entry : top) entry.second = static_cast<float>(entry.second - log_z);
}

}  // namespace

double draw_uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

std::string validate_sampling(const SamplingConfig& c) {
    // Negated comparisons so NaN fails every check.
    if (!(c.temperature >= 0.0f)) return out_of_range("temperature", c.temperature, "[0, inf)");
    if (!(c.top_k >= 0)) return out_of_range("top_k", c.top_k, "[0, inf) (0: off)");
    if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) return out_of_range("top_p", c.top_p, "(0, 1]");
    if (!(c.min_p >= 0.0f && c.min_p < 1.0f)) return out_of_range("min_p", c.min_p, "[0, 1)");
    if (!(c.repetition_penalty > 0.0f && std::isfinite(c.repetition_penalty))) {
        return out_of_range("repetition_penalty", c.repetition_penalty, "(0, inf)");
    }
    if (!(c.presence_penalty >= -2.0f && c.presence_penalty <= 2.0f)) {
        return out_of_range("presence_penalty", c.presence_penalty, "[-2, 2]");
    }
    if (!(c.frequency_penalty >= -2.0f && c.frequency_penalty <= 2.0f)) {
        return out_of_range("frequency_penalty", c.frequency_penalty, "[-2, 2]");
    }
    if (!(c.num_logprobs >= -1 && c.num_logprobs <= 20)) {
        return out_of_range("num_logprobs", c.num_logprobs, "[-1, 20] (-1: none)");
    }
    return "";
}

SampledToken sample_token(const float* logits, int vocab_size, const SamplingConfig& config,
                          const std::vector<int32_t>& tokens, int num_prompt,
                          const std::vector<int32_t>& banned_tokens, std::mt19937_64& rng) {
    if (vocab_size <= 0) throw std::invalid_argument("sample_token: vocab_size must be > 0");
    if (num_prompt < 0 || static_cast<size_t>(num_prompt) > tokens.size()) {
        throw std::invalid_argument("sample_token: num_prompt " + std::to_string(num_prompt) +
                                    " is outside [0, " + std::to_string(tokens.size()) + "]");
    }
    // Checked up front: the penalty passes index by token id and must not throw halfway.
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= vocab_size) {
            throw std::out_of_range("sample_token: token id " + std::to_string(tokens[i]) +
                                    " at position " + std::to_string(i) +
                                    " is outside the vocabulary [0, " +
                                    std::to_string(vocab_size) + ")");
        }
    }
    const std::string error = validate_sampling(config);
    if (!error.empty()) throw std::invalid_argument("sample_token: " + error);

    Scratch& s = scratch();
    const float* processed =
        penalized_logits(logits, vocab_size, config, tokens, num_prompt, banned_tokens, s);

    SampledToken out;
    out.token = config.temperature == 0.0f ? argmax(processed, vocab_size)
                                           : draw(processed, vocab_size, config, rng, s);
    if (out.token < 0) {
        throw std::invalid_argument(
            "sample_token: no token can be drawn (every logit is -inf or NaN after bans)");
    }
    if (config.num_logprobs >= 0) fill_logprobs(logits, vocab_size, config.num_logprobs, out);
    return out;
}

}  // namespace trtllm
