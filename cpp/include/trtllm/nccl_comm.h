// The GPU data plane of tensor parallelism: NCCL all-reduce / all-gather between the ranks of an
// MpiComm, one GPU per rank. Built only with CUDA, MPI and NCCL (TRTLLM_WITH_NCCL); MPI stays
// the control plane (the startup agreement, the leader's broadcast of each batch plan).
//
// Numerics: NCCL sums in the activation dtype, so bfloat16/float16 partial sums are rounded at
// every hop of its ring/tree (NCCL adds in float inside a hop). With tp_size 2 that is one
// rounding, as on the CPU path (docs/opset.md); at larger tp_size it differs from the CPU
// path's float32 sum rounded once by at most an ulp or so per hop.
#pragma once

#include <cstdint>
#include <memory>

#include "trtllm/backend.h"
#include "trtllm/mpi_comm.h"

namespace trtllm {

class NcclCommunicator final : public Communicator {
public:
    // Collective over `mpi`: selects `device`, rank 0 makes the NCCL unique id and broadcasts it
    // over MPI, every rank joins. The ranks agree that each one's device is usable first, so a
    // rank that cannot set its device fails the others (named) instead of leaving them in NCCL's
    // init. `cuda_stream` (a cudaStream_t; null: the default stream) orders every collective.
    NcclCommunicator(std::shared_ptr<MpiComm> mpi, int device, void* cuda_stream);
    ~NcclCommunicator() override;
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int rank() const override;
    int size() const override;
    // Device pointers; enqueued on the stream, asynchronous like a kernel launch.
    void all_reduce_sum(void* data, DType dtype, int64_t count) override;
    void all_gather(const void* in, void* out, DType dtype, int64_t count) override;

    // Waits for the stream (these collectives included) against the MPI communicator's
    // deadline, checking NCCL's asynchronous errors; a peer that is gone or stuck makes this
    // rank abort the job with a message, never hang. The backend calls it where it would
    // otherwise cudaStreamSynchronize.
    void synchronize();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace trtllm
