// CUDA versions of collective.h, the float32 staging of 16-bit all-reduces, and the one-shot
// all-reduce through peer memory, enqueued on `stream`. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "quantization/quantize_cuda.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

void concat_shards_cuda(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp,
                        cudaStream_t stream);

// y[i] = float(x[i]) for n activations of `dtype` (float32, bfloat16, float16).
void widen_to_float_cuda(const void* x, DType dtype, float* y, int64_t n, cudaStream_t stream);
// y[i] = x[i] rounded to `dtype` (to nearest even), once.
void narrow_from_float_cuda(const float* x, void* y, DType dtype, int64_t n, cudaStream_t stream);

// The one-shot all-reduce of the ranks of one machine whose GPUs map each other's memory (CUDA
// IPC; NVLink on H100 machines), set up by NcclCommunicator::enable_peer_all_reduce for one
// dtype. Each rank owns a buffer of 3 slots x world parts, mapped into every rank. Call e pushes
// this rank's input into part `rank` of slot e % 3 of every rank's buffer; each rank waits until
// every part of its own slot holds data, sums the parts in float32 in rank order and rounds once
// (the same bits on every rank), then refills the previous call's slot with the empty marker.
// Empty is a negative zero in every element (a pushed -0.0 becomes +0.0): data and flag travel
// together, one way, so a call costs one write across NVLink and no barrier. Three slots: a peer
// may push call e + 1 while this rank still reads call e, and no rank pushes into a slot before
// its owner has cleared it. A counter on the device numbers the calls, so a captured CUDA graph
// replays the kernel as is.
constexpr int kPeerMaxRanks = 8;

struct PeerBuffers {
    int rank = 0, world = 0;
    int64_t part_bytes = 0;               // one rank's part of a slot: max_bytes rounded up to 16
    void* buffers[kPeerMaxRanks] = {};    // every rank's buffer, as mapped here
    uint32_t* control = nullptr;          // this rank's: calls so far, blocks done, bytes pushed per slot (3)
};

// One rank's buffer for messages of up to max_bytes between `world` ranks.
size_t peer_buffer_bytes(size_t max_bytes, int world);
// Rank `rank`'s view without the mapped buffers (the caller fills `buffers`): the part size, and
// the control words of `own`, this rank's buffer (none if nullptr).
PeerBuffers peer_buffers_layout(int rank, int world, size_t max_bytes, void* own);
// Every element of `buffer` empty, its control zero (before any rank maps it).
void peer_buffer_init_cuda(void* buffer, size_t max_bytes, int world, DType dtype, cudaStream_t stream);
// out = the sum over the ranks of `in` (count elements of the buffers' dtype, at most max_bytes);
// in == out works. Every rank must make the same calls in the same order: a rank waits inside the
// kernel for its peers' data.
void peer_all_reduce_cuda(const void* in, void* out, DType dtype, int64_t count, const PeerBuffers& peers,
                          cudaStream_t stream);

// all_reduce_add_rms_norm (docs/opset.md) in one kernel through the same buffers and calls: each
// rank pushes its partial rows, sums the ranks' parts in float32 (rounded once, as
// peer_all_reduce_cuda), adds the residual (rounded: `sum`), and writes the RMSNorm of that row to
// `normed` (or its quantized codes, `quant`). For rows of up to 1024 16-byte vectors with every
// pointer 16-byte aligned (peer_add_rms_norm_fits), and rows * dim within the peer buffers' size.
bool peer_add_rms_norm_fits(DType dtype, int64_t dim, std::initializer_list<const void*> pointers);
void peer_all_reduce_add_rms_norm_cuda(const void* partial, const void* residual, const void* weight, void* normed,
                                       void* sum, DType dtype, int64_t rows, int64_t dim, float eps,
                                       const PeerBuffers& peers, cudaStream_t stream,
                                       const OutputQuantCuda* quant = nullptr);

}  // namespace trtllm::kernels
