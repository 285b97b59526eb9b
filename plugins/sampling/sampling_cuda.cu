// Device sampler: one block of kThreads per row (sampling_cuda.h has the contract).
//
// Every token gets a 64-bit key, (order-preserving bits of its logit) << 32 | ~id, so "more likely
// first, ties to the lower id" (the CPU sampler's total order) is plain key order and keys are
// unique. The kept set is then a prefix of that order, i.e. {key >= cutoff}: top_k's cutoff is
// the k-th largest key, top_p's the key of the last token whose preceding mass is below top_p of
// the total. Both are found by a radix descent over the key's 8-bit digits from the top: a
// histogram (counts, and fixed-point masses for top_p) of the tokens under the current prefix
// picks the digit, until one bin holds exactly what is wanted. Weights are exp((logit - max) / T)
// in 2^-40 fixed point, so the masses are exact integer sums and the result does not depend on
// the order the threads add them in.
#include <climits>

#include "cuda_common.cuh"
#include "sampling/sampling_cuda.h"

namespace trtllm::kernels {
namespace {

constexpr int kThreads = 1024;  // 32 warps: the block scans below rely on it
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr double kFixedOne = 0x1p40;  // weight 1 (the max); kMaxVocab such weights sum below 2^63
constexpr int kMaxVocab = 1 << 23;

__device__ __forceinline__ uint64_t token_key(float logit, int id) {
    const uint32_t u = __float_as_uint(logit);
    const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // larger float, larger uint
    return (uint64_t{ordered} << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(id));
}

__device__ __forceinline__ int key_id(uint64_t key) { return static_cast<int>(~static_cast<uint32_t>(key)); }

// Not -inf (banned) and not NaN: the tokens the CPU sampler may pick.
__device__ __forceinline__ bool drawable(float logit) { return logit > -INFINITY; }

__device__ __forceinline__ double weight(float logit, float max_logit, double inv_temperature) {
    return exp((static_cast<double>(logit) - max_logit) * inv_temperature);  // as the CPU sampler, in double
}

__device__ __forceinline__ uint64_t fixed_weight(double w) { return __double2ull_rn(w * kFixedOne); }

struct Shared {
    uint32_t count[kBins];
    unsigned long long mass[kBins];
    unsigned long long red_u64[kWarps + 1];
    float red_f32[kWarps + 1];
    double red_f64[kWarps + 1];
    uint64_t prefix, above_count, above_mass;
    int done, token;
};

// Block-wide reduction; every thread gets the result.
template <class V, class Op>
__device__ V block_reduce(V v, Op op, V* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = scratch[lane];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) scratch[kWarps] = v;
    }
    __syncthreads();
    return scratch[kWarps];
}

struct MaxOp {
    template <class V>
    __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct MaxFloatOp {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }  // NaN loses
};
struct SumOp {
    template <class V>
    __device__ V operator()(V a, V b) const { return a + b; }
};

// Exclusive prefix sum over the block in thread order; `total` gets the sum of all.
__device__ uint64_t block_exclusive_scan(uint64_t v, Shared& sh, uint64_t& total) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint64_t inclusive = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t n = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += n;
    }
    __syncthreads();
    if (lane == 31) sh.red_u64[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = sh.red_u64[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint64_t n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        sh.red_u64[lane] = w;  // inclusive sums of the warps
    }
    __syncthreads();
    total = sh.red_u64[kWarps - 1];
    return (warp == 0 ? 0 : sh.red_u64[warp - 1]) + inclusive - v;
}

// What a radix descent looks for among the drawable tokens with key >= floor_key.
struct Target {
    bool by_mass;          // false: the `count`-th largest key; true: top_p's last kept token
    uint64_t count;
    double mass_threshold;  // top_p * total mass (fixed point)
};

// Adds a run of tokens that fell into one bin (threads see long runs at the top digits, where
// nearly every token shares a bin: one atomic per run, not per token).
__device__ __forceinline__ void flush_run(Shared& sh, int bin, uint32_t count, uint64_t mass, bool by_mass) {
    if (bin < 0 || count == 0) return;
    atomicAdd(&sh.count[bin], count);
    if (by_mass) atomicAdd(&sh.mass[bin], static_cast<unsigned long long>(mass));
}

// The cutoff key: the kept tokens are exactly the candidates (drawable, key >= floor_key) with key >= it.
__device__ uint64_t find_cutoff(const float* row, int vocab, uint64_t floor_key, const Target& target, float max_logit,
                                double inv_temperature, Shared& sh) {
    const int tid = threadIdx.x;
    if (tid == 0) {
        sh.prefix = 0;
        sh.above_count = 0;  // candidates above the current prefix's key range
        sh.above_mass = 0;
    }
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = tid; b < kBins; b += kThreads) {
            sh.count[b] = 0;
            sh.mass[b] = 0;
        }
        __syncthreads();
        const uint64_t prefix = sh.prefix;
        int run_bin = -1;
        uint32_t run_count = 0;
        uint64_t run_mass = 0;
        for (int i = tid; i < vocab; i += kThreads) {
            const float l = row[i];
            if (!drawable(l)) continue;
            const uint64_t key = token_key(l, i);
            if (key < floor_key) continue;
            if (shift < 56 && (key >> (shift + 8)) != (prefix >> (shift + 8))) continue;
            const int bin = static_cast<int>((key >> shift) & (kBins - 1));
            if (bin != run_bin) {
                flush_run(sh, run_bin, run_count, run_mass, target.by_mass);
                run_bin = bin;
                run_count = 0;
                run_mass = 0;
            }
            ++run_count;
            if (target.by_mass) run_mass += fixed_weight(weight(l, max_logit, inv_temperature));
        }
        flush_run(sh, run_bin, run_count, run_mass, target.by_mass);
        __syncthreads();
        if (tid == 0) {
            // Walk the bins from the most likely down; the chosen bin holds the cutoff token.
            int chosen = -1;
            bool done = false;
            if (!target.by_mass) {
                uint64_t above = sh.above_count;
                for (int b = kBins - 1; b >= 0; --b) {
                    if (above + sh.count[b] >= target.count) {
                        chosen = b;
                        done = above + sh.count[b] == target.count;  // the whole bin is kept
                        break;
                    }
                    above += sh.count[b];
                }
                sh.above_count = above;
            } else {
                // The last non-empty bin whose first token has less than the threshold before it.
                uint64_t above = sh.above_mass, chosen_above = 0;
                for (int b = kBins - 1; b >= 0; --b) {
                    if (sh.count[b] == 0) continue;
                    if (!(static_cast<double>(above) < target.mass_threshold)) break;
                    chosen = b;
                    chosen_above = above;
                    above += sh.mass[b];
                }
                sh.above_mass = chosen_above;
                done = chosen >= 0 && sh.count[chosen] == 1;
            }
            // chosen >= 0 always: the descent only enters a bin holding the wanted token. A
            // full 64-bit prefix names one token, so the last digit always ends it.
            sh.prefix = prefix | (static_cast<uint64_t>(chosen < 0 ? 0 : chosen) << shift);
            sh.done = done || shift == 0 || chosen < 0;
        }
        __syncthreads();
        if (sh.done) break;
    }
    return sh.prefix;
}

// Draws among the kept tokens (drawable, key >= cutoff, weight >= min_p): the first token in id
// order whose running fixed-point mass exceeds uniform * kept mass.
__device__ int draw_kept(const float* row, int vocab, uint64_t cutoff, float min_p, double uniform, float max_logit,
                         double inv_temperature, Shared& sh) {
    const int chunk = (vocab + kThreads - 1) / kThreads;
    const int lo = min(vocab, static_cast<int>(threadIdx.x) * chunk), hi = min(vocab, lo + chunk);
    auto kept_weight = [&](int i) -> uint64_t {
        const float l = row[i];
        if (!drawable(l) || token_key(l, i) < cutoff) return 0;
        const double w = weight(l, max_logit, inv_temperature);
        return w >= static_cast<double>(min_p) ? fixed_weight(w) : 0;
    };
    uint64_t mine = 0;
    for (int i = lo; i < hi; ++i) mine += kept_weight(i);
    uint64_t total = 0;
    const uint64_t before = block_exclusive_scan(mine, sh, total);
    // total >= 2^40: the most likely token has weight 1 and is always kept.
    const auto scaled = static_cast<uint64_t>(uniform * static_cast<double>(total));
    const uint64_t target = scaled < total ? scaled : total - 1;  // u * total may round up to total
    if (threadIdx.x == 0) sh.token = kNoFiniteLogit;
    __syncthreads();
    if (before <= target && target < before + mine) {  // exactly one thread's range holds it
        uint64_t cumulative = before;
        for (int i = lo; i < hi; ++i) {
            cumulative += kept_weight(i);
            if (target < cumulative) {
                sh.token = i;
                break;
            }
        }
    }
    __syncthreads();
    return sh.token;
}

// log_softmax of the raw row at `token`, in double as the CPU sampler.
__device__ float token_logprob(const float* row, int vocab, int token, Shared& sh) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += kThreads) mx = fmaxf(mx, row[i]);
    mx = block_reduce(mx, MaxFloatOp{}, sh.red_f32);
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) sum += exp(static_cast<double>(row[i]) - mx);
    sum = block_reduce(sum, SumOp{}, sh.red_f64);
    return static_cast<float>(static_cast<double>(row[token]) - (static_cast<double>(mx) + log(sum)));
}

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(const float* logits, int64_t row_stride, int vocab,
                                                               const RowSampling* params, RowSample* out) {
    __shared__ Shared sh;
    const float* row = logits + int64_t{blockIdx.x} * row_stride;
    const RowSampling p = params[blockIdx.x];

    float max_logit = -INFINITY;
    uint64_t best = 0;  // below every drawable token's key
    unsigned long long num_drawable = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const float l = row[i];
        if (!drawable(l)) continue;
        max_logit = fmaxf(max_logit, l);
        const uint64_t key = token_key(l, i);
        best = key > best ? key : best;
        ++num_drawable;
    }
    max_logit = block_reduce(max_logit, MaxFloatOp{}, sh.red_f32);
    best = block_reduce(static_cast<unsigned long long>(best), MaxOp{}, sh.red_u64);
    num_drawable = block_reduce(num_drawable, SumOp{}, sh.red_u64);

    int token;
    if (num_drawable == 0) {
        token = kNoFiniteLogit;
    } else if (p.temperature == 0.0f) {
        token = key_id(best);
    } else if (isinf(max_logit)) {
        token = kPosInfLogit;
    } else {
        const double inv_temperature = 1.0 / static_cast<double>(p.temperature);
        uint64_t cutoff = 0;
        if (p.top_k > 0 && static_cast<unsigned long long>(p.top_k) < num_drawable) {
            cutoff = find_cutoff(row, vocab, 0, Target{false, static_cast<uint64_t>(p.top_k), 0.0}, max_logit,
                                 inv_temperature, sh);
        }
        if (p.top_p < 1.0f) {
            uint64_t mass = 0;
            for (int i = threadIdx.x; i < vocab; i += kThreads) {
                const float l = row[i];
                if (drawable(l) && token_key(l, i) >= cutoff) mass += fixed_weight(weight(l, max_logit, inv_temperature));
            }
            mass = block_reduce(static_cast<unsigned long long>(mass), SumOp{}, sh.red_u64);
            const double threshold = static_cast<double>(p.top_p) * static_cast<double>(mass);
            // A descent may stop at the floor of a bin that also holds tokens below top_k's cutoff.
            const uint64_t top_p_cutoff =
                find_cutoff(row, vocab, cutoff, Target{true, 0, threshold}, max_logit, inv_temperature, sh);
            cutoff = top_p_cutoff > cutoff ? top_p_cutoff : cutoff;
        }
        token = draw_kept(row, vocab, cutoff, p.min_p, p.uniform, max_logit, inv_temperature, sh);
    }
    const float logprob = (p.want_logprob != 0 && token >= 0) ? token_logprob(row, vocab, token, sh) : 0.0f;
    if (threadIdx.x == 0) out[blockIdx.x] = RowSample{token, logprob};
}

}  // namespace

void sample_rows_cuda(const float* logits, int64_t rows, int64_t row_stride, int vocab_size, const RowSampling* params,
                      RowSample* out, cudaStream_t stream) {
    if (rows <= 0) return;
    if (vocab_size <= 0 || vocab_size > kMaxVocab) {
        throw std::invalid_argument("device sampler: vocab_size must be in [1, " + std::to_string(kMaxVocab) +
                                    "], got " + std::to_string(vocab_size));
    }
    sample_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, row_stride, vocab_size, params,
                                                                             out);
    CHECK_LAUNCH("sample_rows_kernel");
}

}  // namespace trtllm::kernels
