#include "trtllm/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace trtllm {
namespace {

void check_cuda(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

void check_nccl(ncclResult_t result, const char* what) {
    if (result != ncclSuccess) throw std::runtime_error(std::string(what) + " failed: " + ncclGetErrorString(result));
}

ncclDataType_t nccl_type(DType dtype) {
    switch (dtype) {
        case DType::kFloat32: return ncclFloat32;
        case DType::kFloat16: return ncclFloat16;
        case DType::kBFloat16: return ncclBfloat16;
        case DType::kInt32: return ncclInt32;
        case DType::kInt8: return ncclInt8;
        case DType::kUInt8: return ncclUint8;
        case DType::kFloat8E4M3: break;
    }
    throw std::invalid_argument(std::string("NCCL collectives of ") + dtype_name(dtype) + " are not supported");
}

}  // namespace

struct NcclCommunicator::Impl {
    std::shared_ptr<MpiComm> mpi;
    cudaStream_t stream = nullptr;
    ncclComm_t comm = nullptr;
};

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiComm> mpi, int device, void* cuda_stream)
    : impl_(std::make_unique<Impl>()) {
    impl_->mpi = std::move(mpi);
    impl_->stream = static_cast<cudaStream_t>(cuda_stream);
    MpiComm& m = *impl_->mpi;
    std::string error;
    try {
        check_cuda(cudaSetDevice(device), ("cudaSetDevice(" + std::to_string(device) + ")").c_str());
    } catch (const std::exception& e) {
        error = e.what();
    }
    m.check_all_ok(error, "selecting each rank's GPU");
    ncclUniqueId id{};
    if (m.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    m.broadcast(&id, sizeof id, 0, "broadcast of the NCCL unique id");
    check_nccl(ncclCommInitRank(&impl_->comm, m.size(), id, m.rank()), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
    if (impl_->comm != nullptr) ncclCommDestroy(impl_->comm);
}

int NcclCommunicator::rank() const { return impl_->mpi->rank(); }
int NcclCommunicator::size() const { return impl_->mpi->size(); }

void NcclCommunicator::all_reduce_sum(void* data, DType dtype, int64_t count) {
    check_nccl(ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(dtype), ncclSum, impl_->comm,
                             impl_->stream), "ncclAllReduce");
}

void NcclCommunicator::all_gather(const void* in, void* out, DType dtype, int64_t count) {
    check_nccl(ncclAllGather(in, out, static_cast<size_t>(count), nccl_type(dtype), impl_->comm, impl_->stream),
               "ncclAllGather");
}

void NcclCommunicator::synchronize() {
    const MpiComm& m = *impl_->mpi;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(m.timeout_s());
    auto pause = std::chrono::microseconds(2);
    for (int polls = 0;; ++polls) {
        const cudaError_t status = cudaStreamQuery(impl_->stream);
        if (status == cudaSuccess) return;
        if (status != cudaErrorNotReady) m.abort(std::string("CUDA stream failed: ") + cudaGetErrorString(status));
        ncclResult_t async_error = ncclSuccess;
        ncclCommGetAsyncError(impl_->comm, &async_error);
        if (async_error != ncclSuccess) {
            ncclCommAbort(impl_->comm);
            impl_->comm = nullptr;
            m.abort(std::string("NCCL failed: ") + ncclGetErrorString(async_error));
        }
        if (std::chrono::steady_clock::now() > deadline) {
            ncclCommAbort(impl_->comm);
            impl_->comm = nullptr;
            m.abort("the GPU work of an iteration did not complete within " + std::to_string(m.timeout_s()) +
                    " s (TRTLLM_TP_TIMEOUT_S): another rank died, is stuck, or never reached a collective");
        }
        if (polls < 2000) {  // spin (yielding) first: a decode step's sync is short
            std::this_thread::yield();
            continue;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(200));
    }
}

}  // namespace trtllm
