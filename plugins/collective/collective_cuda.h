// CUDA versions of collective.h, the float32 staging of 16-bit all-reduces, and the one-shot
// all-reduce through peer memory, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

void concat_shards_cuda(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp,
                        cudaStream_t stream);

// y[i] = float(x[i]) for n activations of `dtype` (float32, bfloat16, float16).
void widen_to_float_cuda(const void* x, DType dtype, float* y, int64_t n, cudaStream_t stream);
// y[i] = x[i] rounded to `dtype` (to nearest even), once.
void narrow_from_float_cuda(const float* x, void* y, DType dtype, int64_t n, cudaStream_t stream);

// The one-shot all-reduce of the ranks of one machine whose GPUs map each other's memory (CUDA
// IPC, NVLink on H100 machines; set up by NcclCommunicator). Each rank's staging buffer is
// mapped into every rank: a rank copies its input into its own, the ranks meet at a flag
// barrier, each reads every rank's staging buffer and sums in float32 in rank order, rounding
// once, and the ranks meet again so no staging buffer is overwritten while a peer still reads it.
// Every rank computes the same sum in the same order, so the results are bitwise identical. The
// flags count calls (epochs), so a captured CUDA graph replays it as is.
constexpr int kPeerMaxRanks = 8;
constexpr int kPeerMaxBlocks = 32;

struct PeerBuffers {
    int rank = 0, world = 0;
    void* staging[kPeerMaxRanks] = {};   // every rank's staging area, as mapped here
    uint32_t* flags[kPeerMaxRanks] = {};  // every rank's barrier flags: [2][kPeerMaxBlocks][kPeerMaxRanks]
    uint32_t* epochs = nullptr;           // this rank's calls so far, per block: [kPeerMaxBlocks]
};

// One rank's peer buffer: the staging area (max_bytes, rounded up to 16), then the flags, then
// the epochs; all zero before the first call.
size_t peer_buffer_bytes(size_t max_bytes);
size_t peer_flags_offset(size_t max_bytes);

// out = the sum over the ranks of `in` (count elements of float32, bfloat16 or float16, at most
// the staging area's bytes); in == out works. Every rank must make the same calls in the same
// order: a rank waits for its peers inside the kernel.
void peer_all_reduce_cuda(const void* in, void* out, DType dtype, int64_t count, const PeerBuffers& peers,
                          cudaStream_t stream);

}  // namespace trtllm::kernels
