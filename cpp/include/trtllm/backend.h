// A backend runs a Model's op list for one iteration. The scheduler, KV cache manager and
// sampler are backend-independent; only this interface changes between CPU and CUDA.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "attention/attention.h"
#include "sampling/sampling.h"
#include "trtllm/model.h"

namespace trtllm {

class NcclCommunicator;  // nccl_comm.h: the GPU's collectives, enqueued on a stream

// Sums / gathers a host tensor over the tensor-parallel ranks (the CPU backend's, over MPI).
class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual void all_reduce_sum(void* data, DType dtype, int64_t count) = 0;
    // in: `count` elements of this rank; out: size() * count elements in rank order.
    virtual void all_gather(const void* in, void* out, DType dtype, int64_t count) = 0;
};

// One iteration's inputs, laid out as op set v1 describes (docs/opset.md).
struct StepInput {
    std::vector<int32_t> input_ids;       // [num_tokens]
    std::vector<int32_t> position_ids;    // [num_tokens]
    std::vector<int32_t> past_len;        // [num_requests]
    std::vector<int32_t> new_len;         // [num_requests]
    std::vector<int32_t> token_start;     // [num_requests]
    std::vector<int32_t> block_table;     // [num_requests, max_blocks_per_seq]
    int max_blocks_per_seq = 0;
    std::vector<int32_t> output_rows;     // [num_output_rows] rows of the packed batch to return logits for

    int num_tokens() const { return static_cast<int>(input_ids.size()); }
    int num_requests() const { return static_cast<int>(past_len.size()); }
};

class Backend {
public:
    virtual ~Backend() = default;
    // Runs the op list; returns logits [num_output_rows, vocab_size_padded] in float32, valid
    // until the next call.
    virtual const float* forward(const StepInput& step) = 0;
    // Runs the op list and waits for it; nothing comes back (a tensor-parallel follower: the
    // leader samples).
    virtual void forward_without_output(const StepInput& step) { forward(step); }
    // Whether forward_sample is available: the backend samples on the device.
    virtual bool samples_on_device() const { return false; }
    // Runs the op list and samples output row i with rows[i] (kernels::sample_rows_cuda's
    // semantics: greedy, temperature, top_k, top_p, min_p); returns per output row the token (or
    // a kernels::kNoFiniteLogit / kPosInfLogit code) and its logprob, valid until the next call.
    // No logits come back. Only for backends whose samples_on_device() is true.
    virtual const kernels::RowSample* forward_sample(const StepInput& /*step*/,
                                                     const std::vector<kernels::RowSampling>& /*rows*/) {
        throw std::logic_error("this backend does not sample on the device");
    }
    virtual int64_t kv_cache_bytes() const = 0;
};

// `num_kv_blocks` blocks of `tokens_per_block` tokens per layer. `comm` may be null when tp_size is 1.
std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, int64_t num_kv_blocks,
                                          int tokens_per_block, std::shared_ptr<Communicator> comm);

// Only in builds with the CUDA backend (TRTLLM_WITH_CUDA). Uploads the weights to the GPU of
// `nccl` (null when tp_size is 1: GPU 0). `num_kv_blocks` <= 0: as many blocks as
// `free_gpu_memory_fraction` of the GPU memory left after the weights, activations and scratch
// hold, at most `max_kv_blocks` (> 0) — kv_cache_bytes() then says how many it took.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int64_t num_kv_blocks,
                                           int tokens_per_block, std::shared_ptr<NcclCommunicator> nccl,
                                           double free_gpu_memory_fraction = 0.9, int64_t max_kv_blocks = 0);

}  // namespace trtllm
