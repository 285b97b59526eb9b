// The GPU data plane of tensor parallelism: NCCL all-reduce / all-gather between the ranks of an
// MpiComm, one GPU per rank. MPI stays the control plane (the startup agreement, the NCCL unique
// id, the leader's broadcast of each batch plan). Built with NCCL (TRTLLM_WITH_NCCL); in a CUDA
// build without it, constructing one throws saying so (nccl_comm_stub.cpp).
//
// Collectives are enqueued on the caller's stream like kernels, so they can be captured into a
// CUDA graph. Numerics: NCCL sums in the buffer's dtype, rounding 16-bit partial sums at every
// hop; the CUDA backend keeps docs/opset.md's contract (one rounding of the float32 sum) on top
// of that (cuda_backend.cpp, all_reduce).
#pragma once

#include <cstdint>
#include <memory>

#include "trtllm/dtype.h"
#include "trtllm/mpi_comm.h"

namespace trtllm {

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
