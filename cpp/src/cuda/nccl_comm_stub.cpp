// NcclCommunicator in a CUDA build without NCCL (or without MPI): none can be made, so no other
// member ever runs.
#include <stdexcept>

#include "trtllm/nccl_comm.h"

namespace trtllm {

struct NcclCommunicator::Impl {};

namespace {
[[noreturn]] void no_nccl() {
    throw std::runtime_error(
        "this trtllm_runtime was built without NCCL (or without MPI), which tensor parallelism on GPUs needs: "
        "install NCCL (pip install nvidia-nccl-cu13, or set NCCL_HOME) and an MPI with its headers, and reinstall "
        "the package (pip install -e .)");
}
}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiComm>) { no_nccl(); }
NcclCommunicator::~NcclCommunicator() = default;
bool NcclCommunicator::enable_peer_all_reduce(DType, size_t) { no_nccl(); }
bool NcclCommunicator::uses_peer_all_reduce(DType, int64_t) const { no_nccl(); }
const kernels::PeerBuffers* NcclCommunicator::peer_buffers(DType, int64_t) const { no_nccl(); }
void NcclCommunicator::all_reduce_sum(const void*, void*, DType, int64_t, void*) { no_nccl(); }
void NcclCommunicator::all_gather(const void*, void*, DType, int64_t, void*) { no_nccl(); }
void NcclCommunicator::synchronize(void*) { no_nccl(); }

}  // namespace trtllm
