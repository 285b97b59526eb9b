#include "trtllm/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "collective/collective_cuda.h"

namespace trtllm {

namespace {

using Clock = std::chrono::steady_clock;

void check_nccl(ncclResult_t result, const char* what) {
    if (result != ncclSuccess) {
        throw std::runtime_error(std::string(what) + " failed: " + ncclGetErrorString(result) + " (" +
                                 ncclGetLastError(nullptr) + ")");
    }
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

// This rank's GPU: device `local_rank` of those visible. A rank that sees exactly one GPU takes
// it: its launcher pinned each rank to its own (CUDA_VISIBLE_DEVICES); should two ranks still
// share one, NCCL's init refuses ("Duplicate GPU detected").
int pick_device(const MpiComm& mpi) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw std::runtime_error(std::string("no CUDA device is visible: ") + cudaGetErrorString(err));
    }
    if (count < 1) throw std::runtime_error("no CUDA device is visible");
    if (count == 1) return 0;
    if (mpi.local_size() > count) {
        throw std::runtime_error("this machine runs " + std::to_string(mpi.local_size()) + " ranks but has " +
                                 std::to_string(count) + " GPUs; tensor parallelism needs one GPU per rank (start "
                                 "at most " + std::to_string(count) + " ranks per machine)");
    }
    return mpi.local_rank();
}

}  // namespace

struct NcclCommunicator::Impl {
    ncclComm_t comm = nullptr;
    // The peer path (enable_peer_all_reduce): this rank's buffer and the peers' as mapped here.
    void* own_buffer = nullptr;
    std::vector<void*> opened;
    kernels::PeerBuffers peers;
    size_t peer_max_bytes = 0;  // 0: the peer path is off
    DType peer_dtype = DType::kFloat32;

    // CUDA wants every importer to close its mapping before the exporter frees the memory: where
    // the ranks are together (a failed setup), they close, meet, then free.
    void close_peer_mappings() {
        for (void* p : opened) cudaIpcCloseMemHandle(p);
        opened.clear();
        peer_max_bytes = 0;
    }
    void free_own_buffer() {
        if (own_buffer != nullptr) cudaFree(own_buffer);
        own_buffer = nullptr;
    }
};

namespace {

// ncclCommInitRank returns once every rank has joined; a rank that never does (dead, stuck, or
// unreachable over the network) would keep the others in it forever. A watchdog ends the job
// after timeout_s instead. (A nonblocking communicator has a pollable init, but NCCL then runs
// every later collective's launch on a thread of its own, which would slow every eager step.)
ncclComm_t join_nccl(const MpiComm& mpi, const ncclUniqueId& id) {
    std::mutex mutex;
    std::condition_variable joined_cv;
    bool joined = false;
    std::thread watchdog([&] {
        std::unique_lock<std::mutex> lock(mutex);
        if (!joined_cv.wait_for(lock, std::chrono::duration<double>(mpi.timeout_s()), [&] { return joined; })) {
            mpi.abort("joining NCCL did not complete within " + std::to_string(mpi.timeout_s()) +
                      " s (TRTLLM_TP_TIMEOUT_S): another rank died or is stuck, or the ranks cannot reach each other "
                      "(multi-machine: set NCCL_SOCKET_IFNAME / NCCL_IB_HCA; NCCL_DEBUG=INFO says more)");
        }
    });
    ncclComm_t comm = nullptr;
    const ncclResult_t result = ncclCommInitRank(&comm, mpi.size(), id, mpi.rank());
    {
        std::lock_guard<std::mutex> lock(mutex);
        joined = true;
    }
    joined_cv.notify_one();
    watchdog.join();
    if (result != ncclSuccess) {
        mpi.abort(std::string("ncclCommInitRank failed: ") + ncclGetErrorString(result) + " (" +
                  ncclGetLastError(nullptr) + "; one GPU per rank, NCCL_DEBUG=INFO says more)");
    }
    return comm;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiComm> mpi)
    : mpi_(std::move(mpi)), impl_(std::make_unique<Impl>()) {
    MpiComm& m = *mpi_;
    std::string error;
    try {
        device_ = pick_device(m);
        const cudaError_t err = cudaSetDevice(device_);
        if (err != cudaSuccess) {
            throw std::runtime_error("cudaSetDevice(" + std::to_string(device_) + ") failed: " + cudaGetErrorString(err));
        }
    } catch (const std::exception& e) {
        error = e.what();
    }
    m.check_all_ok(error, "selecting each rank's GPU");
    // From here on a failing rank ends the job: its peers would be waiting inside NCCL.
    ncclUniqueId id{};
    if (m.rank() == 0) {
        const ncclResult_t result = ncclGetUniqueId(&id);
        if (result != ncclSuccess) m.abort(std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(result));
    }
    m.broadcast(&id, sizeof id, 0, "broadcast of the NCCL unique id");
    impl_->comm = join_nccl(m, id);
}

NcclCommunicator::~NcclCommunicator() {
    // Every peer's push into this rank's buffer arrived before this rank's last all-reduce kernel
    // finished (it waits for them), and the backend synchronized its stream before letting go. A
    // peer may still hold its mapping of this buffer for a moment: no MPI meeting here, which would
    // make a failing job's teardown wait for the deadline.
    impl_->close_peer_mappings();
    impl_->free_own_buffer();
    if (impl_->comm != nullptr) ncclCommDestroy(impl_->comm);
}

namespace {

// A one-shot all-reduce writes (ranks - 1) times the message to peers, and its buffer holds 3 x
// ranks parts; NCCL's ring moves about twice the message whatever the rank count. On 2 H100s the
// two tied at 4 MiB and NCCL won at 8 (scripts/bench_all_reduce.py).
constexpr size_t kPeerPushBudgetBytes = size_t{4} << 20;

std::string cuda_error(const char* what, cudaError_t err) {
    cudaGetLastError();  // not sticky: clear it so later calls do not report it again
    return std::string(what) + ": " + cudaGetErrorString(err);
}

}  // namespace

bool NcclCommunicator::enable_peer_all_reduce(DType dtype, size_t max_bytes) {
    MpiComm& m = *mpi_;
    if (impl_->own_buffer != nullptr) throw std::logic_error("enable_peer_all_reduce: already enabled");
    const bool float_type = dtype == DType::kFloat32 || dtype == DType::kBFloat16 || dtype == DType::kFloat16;
    const bool possible = float_type && size() > 1 && size() <= kernels::kPeerMaxRanks && m.local_size() == size();
    if (possible) max_bytes = std::min(max_bytes, kPeerPushBudgetBytes / static_cast<size_t>(size() - 1)) / 16 * 16;
    const int64_t agreed_bytes = m.all_reduce_min(possible ? static_cast<int64_t>(max_bytes) : 0,
                                                  "agreeing on the peer all-reduce");
    if (agreed_bytes <= 0) return false;
    max_bytes = static_cast<size_t>(agreed_bytes);

    // Every rank's buffer is empty (its control zero) before any rank can map it.
    std::string error;
    cudaIpcMemHandle_t handle{};
    const size_t bytes = kernels::peer_buffer_bytes(max_bytes, size());
    if (cudaError_t err = cudaMalloc(&impl_->own_buffer, bytes); err != cudaSuccess) {
        impl_->own_buffer = nullptr;
        error = cuda_error("cudaMalloc", err);
    } else {
        try {  // a rank must not leave between the collectives around this: it reports instead
            kernels::peer_buffer_init_cuda(impl_->own_buffer, max_bytes, size(), dtype, nullptr);
            if (err = cudaDeviceSynchronize(); err != cudaSuccess) {
                error = cuda_error("cudaDeviceSynchronize", err);
            } else if (err = cudaIpcGetMemHandle(&handle, impl_->own_buffer); err != cudaSuccess) {
                error = cuda_error("cudaIpcGetMemHandle", err);
            }
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
    std::vector<cudaIpcMemHandle_t> handles(static_cast<size_t>(size()));
    m.all_gather(&handle, handles.data(), DType::kUInt8, sizeof handle, "exchanging the peer all-reduce's handles");
    kernels::PeerBuffers& p = impl_->peers;
    p = kernels::peer_buffers_layout(m.rank(), size(), max_bytes, impl_->own_buffer);
    for (int r = 0; r < size() && error.empty(); ++r) {
        void* base = impl_->own_buffer;
        if (r != m.rank()) {
            if (cudaError_t err = cudaIpcOpenMemHandle(&base, handles[static_cast<size_t>(r)],
                                                       cudaIpcMemLazyEnablePeerAccess);
                err != cudaSuccess) {
                const std::string what = "mapping rank " + std::to_string(r) + "'s memory (cudaIpcOpenMemHandle)";
                error = cuda_error(what.c_str(), err);
                break;
            }
            impl_->opened.push_back(base);
        }
        p.buffers[r] = base;
    }
    if (!error.empty()) {
        std::fprintf(stderr, "trtllm rank %d: the peer all-reduce is unavailable (%s); all-reduces use NCCL\n",
                     m.rank(), error.c_str());
        std::fflush(stderr);
    }
    if (m.all_reduce_min(error.empty() ? 1 : 0, "agreeing on the peer all-reduce's mappings") == 0) {
        impl_->close_peer_mappings();
        m.all_reduce_min(0, "closing the peer all-reduce's mappings");  // every rank closed before any frees
        impl_->free_own_buffer();
        return false;
    }
    impl_->peer_max_bytes = max_bytes;
    impl_->peer_dtype = dtype;
    return true;
}

bool NcclCommunicator::uses_peer_all_reduce(DType dtype, int64_t count) const {
    return impl_->peer_max_bytes > 0 && dtype == impl_->peer_dtype && count > 0 &&
           static_cast<size_t>(count) * dtype_size(dtype) <= impl_->peer_max_bytes;
}

const kernels::PeerBuffers* NcclCommunicator::peer_buffers(DType dtype, int64_t count) const {
    return uses_peer_all_reduce(dtype, count) ? &impl_->peers : nullptr;
}

void NcclCommunicator::all_reduce_sum(const void* in, void* out, DType dtype, int64_t count, void* stream) {
    if (uses_peer_all_reduce(dtype, count)) {
        kernels::peer_all_reduce_cuda(in, out, dtype, count, impl_->peers, static_cast<cudaStream_t>(stream));
        return;
    }
    check_nccl(ncclAllReduce(in, out, static_cast<size_t>(count), nccl_type(dtype), ncclSum, impl_->comm,
                             static_cast<cudaStream_t>(stream)),
               "ncclAllReduce");
}

void NcclCommunicator::all_gather(const void* in, void* out, DType dtype, int64_t count, void* stream) {
    check_nccl(ncclAllGather(in, out, static_cast<size_t>(count), nccl_type(dtype), impl_->comm,
                             static_cast<cudaStream_t>(stream)),
               "ncclAllGather");
}

void NcclCommunicator::synchronize(void* stream) {
    const MpiComm& m = *mpi_;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration<double>(m.timeout_s());
    // Spin (yielding the core) for as long as a step may take, then back off: a sleep's wake-up
    // latency would add to every decode step.
    const auto spin_for = std::chrono::milliseconds(50);
    auto pause = std::chrono::microseconds(2);
    while (true) {
        const cudaError_t status = cudaStreamQuery(static_cast<cudaStream_t>(stream));
        if (status == cudaSuccess) return;
        if (status != cudaErrorNotReady) m.abort(std::string("CUDA stream failed: ") + cudaGetErrorString(status));
        ncclResult_t async_error = ncclSuccess;
        const ncclResult_t queried = ncclCommGetAsyncError(impl_->comm, &async_error);
        if (queried != ncclSuccess) async_error = queried;  // the communicator itself is unusable
        if (async_error != ncclSuccess && async_error != ncclInProgress) {
            ncclCommAbort(impl_->comm);
            impl_->comm = nullptr;
            m.abort(std::string("NCCL failed: ") + ncclGetErrorString(async_error));
        }
        const auto now = Clock::now();
        if (now > deadline) {
            ncclCommAbort(impl_->comm);
            impl_->comm = nullptr;
            m.abort("the GPU work of an iteration did not complete within " + std::to_string(m.timeout_s()) +
                    " s (TRTLLM_TP_TIMEOUT_S): another rank died, is stuck, or never reached a collective");
        }
        if (now - start < spin_for) {
            std::this_thread::yield();
            continue;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
}

}  // namespace trtllm
