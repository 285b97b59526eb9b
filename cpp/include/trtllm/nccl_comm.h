// The GPU data plane of tensor parallelism: NCCL all-reduce / all-gather between the ranks of an
// MpiComm, one GPU per rank. MPI stays the control plane (the startup agreement, the NCCL unique
// id, the leader's broadcast of each batch plan). Built with NCCL (TRTLLM_WITH_NCCL); in a CUDA
// build without it, constructing one throws saying so (nccl_comm_stub.cpp).
//
// Collectives are enqueued on the caller's stream like kernels, so they can be captured into a
// CUDA graph. Small all-reduces between ranks of one machine can go through peer memory instead
// of NCCL (enable_peer_all_reduce): one kernel, 4.2 us for 8 KiB on 2 H100s where NCCL's took
// 6.6, which a TP decode step pays twice per layer. Numerics: NCCL sums in the buffer's
// dtype, rounding 16-bit partial sums at every hop; the peer path sums in float32 and rounds
// once; the CUDA backend keeps docs/opset.md's contract (one rounding of the float32 sum) on top
// of NCCL (cuda_backend.cpp, all_reduce).
#pragma once

#include <cstdint>
#include <memory>

#include "trtllm/dtype.h"
#include "trtllm/mpi_comm.h"

namespace trtllm {
namespace kernels {
struct PeerBuffers;  // plugins/collective/collective_cuda.h
}

class NcclCommunicator {
public:
    // Collective over `mpi`. Picks this rank's GPU by its local rank (device `local_rank`; a rank
    // that sees a single GPU, e.g. pinned by CUDA_VISIBLE_DEVICES, takes that one) and makes it
    // current; the ranks agree that every one got a GPU before any joins NCCL (std::runtime_error
    // on every rank naming each rank that did not, e.g. more ranks on a machine than GPUs). Then
    // rank 0 makes the NCCL unique id, broadcasts it over MPI and every rank joins. A join that
    // fails, or does not finish within mpi's timeout_s, ends the whole job with a message
    // (MpiComm::abort): the other ranks would otherwise wait in NCCL's init forever.
    explicit NcclCommunicator(std::shared_ptr<MpiComm> mpi);
    ~NcclCommunicator();
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int size() const { return mpi_->size(); }
    int device() const { return device_; }

    // Collective. From now on, all-reduces of `dtype` (float32, bfloat16 or float16) of at most
    // `max_bytes` (capped by what one may push to peers, see nccl_comm.cpp) go through peer
    // memory (kernels::peer_all_reduce_cuda), if every rank runs on this machine and the GPUs can
    // map each other's memory (CUDA IPC); otherwise everything stays on NCCL. The ranks agree:
    // returns the same on every rank, whether the peer path is on. Call it once, before capturing graphs.
    bool enable_peer_all_reduce(DType dtype, size_t max_bytes);
    // Whether all_reduce_sum of `count` items of `dtype` takes the peer path (a float32 sum,
    // rounded once to `dtype`, whatever the number of ranks; a sum of negative zeros is +0).
    bool uses_peer_all_reduce(DType dtype, int64_t count) const;
    // The peer buffers for a kernel that does its own all-reduce on them (the fused
    // all_reduce_add_rms_norm), where all_reduce_sum of `count` items would take the peer path;
    // nullptr otherwise. The kernel then stands for one all_reduce_sum call on every rank.
    const kernels::PeerBuffers* peer_buffers(DType dtype, int64_t count) const;

    // Device pointers; `stream` is a cudaStream_t on device(). out = the sum of `in` over the
    // ranks, in `dtype` (float32, bfloat16, float16, int32); in == out works in place.
    void all_reduce_sum(const void* in, void* out, DType dtype, int64_t count, void* stream);
    // out: size() * count elements, rank order (NCCL gathers along the first dim).
    void all_gather(const void* in, void* out, DType dtype, int64_t count, void* stream);

    // Waits for `stream` (these collectives included) against mpi's deadline, checking NCCL's
    // asynchronous errors: a peer that is gone or stuck makes this rank end the job with a
    // message (MpiComm::abort), never hang. Use it where a single GPU would cudaStreamSynchronize.
    void synchronize(void* stream);

    struct Impl;

private:
    std::shared_ptr<MpiComm> mpi_;
    int device_ = 0;
    std::unique_ptr<Impl> impl_;
};

}  // namespace trtllm
