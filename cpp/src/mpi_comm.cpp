// The MPI communicator (built when CMake finds MPI). Only the MPI C API, so it builds against
// Open MPI and MPICH alike.
#include "trtllm/mpi_comm.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace trtllm {

bool mpi_available() { return true; }

std::string mpi_library_version() {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(text, &length);  // callable before MPI_Init
    std::string version(text, static_cast<size_t>(length));
    return version.substr(0, version.find('\n'));
}

namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error_string(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
    return std::string(text, static_cast<size_t>(length));
}

void check_mpi(int code, const std::string& what) {
    if (code != MPI_SUCCESS) throw std::runtime_error(what + " failed: " + mpi_error_string(code));
}

// Set by MpiComm::abort. MPI_Abort ends the process through exit(), which runs the static
// destructors: MPI_Finalize there would wait for the ranks we are aborting, forever.
std::atomic<bool> g_aborting{false};

// MPI_Init_thread once per process, MPI_Finalize at exit (a function-local static: destroyed
// after Python's atexit hooks have closed the executors).
class MpiSession {
public:
    static void ensure_initialized() { static MpiSession session; }

    MpiSession() {
        int initialized = 0, finalized = 0;
        MPI_Initialized(&initialized);
        MPI_Finalized(&finalized);
        if (finalized) throw std::runtime_error("MPI was already finalized in this process");
        int provided = MPI_THREAD_SINGLE;
        if (!initialized) {
            check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
            owns_ = true;
        } else {
            MPI_Query_thread(&provided);
        }
        if (provided < MPI_THREAD_SERIALIZED) {
            throw std::runtime_error("MPI provides thread level " + std::to_string(provided) +
                                     "; tensor parallelism needs MPI_THREAD_SERIALIZED or higher (if something "
                                     "else initialized MPI first, e.g. mpi4py, let it ask for MPI_THREAD_MULTIPLE)");
        }
    }

    ~MpiSession() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (owns_ && !finalized && !g_aborting) MPI_Finalize();
    }

private:
    bool owns_ = false;
};

MPI_Datatype mpi_type(DType dtype) {
    switch (dtype) {
        case DType::kFloat32: return MPI_FLOAT;
        case DType::kInt32: return MPI_INT32_T;
        case DType::kFloat16: case DType::kBFloat16: return MPI_UINT16_T;
        case DType::kInt8: return MPI_INT8_T;
        case DType::kUInt8: case DType::kFloat8E4M3: return MPI_UINT8_T;
    }
    throw std::invalid_argument("unknown dtype");
}

int checked_count(int64_t count, const char* what) {
    if (count < 0 || count > INT_MAX) {
        throw std::length_error(std::string(what) + ": " + std::to_string(count) + " elements exceed MPI's int count");
    }
    return static_cast<int>(count);
}

}  // namespace

struct MpiComm::Impl {
    MPI_Comm comm = MPI_COMM_NULL;
    std::vector<float> scratch;  // float32 staging of 16-bit all-reduces
};

std::shared_ptr<MpiComm> MpiComm::world(double timeout_s) {
    if (!(timeout_s > 0.0)) throw std::invalid_argument("MPI timeout_s must be > 0, got " + std::to_string(timeout_s));
    MpiSession::ensure_initialized();
    auto impl = std::make_unique<Impl>();
    // A private duplicate: our traffic never matches messages of other MPI users in the process.
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &impl->comm), "MPI_Comm_dup");
    // Errors come back as codes (turned into exceptions or an abort naming the rank) instead of
    // MPI's default handler killing the job without saying what we were doing.
    MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
    int rank = 0, size = 1, local_rank = 0, local_size = 1;
    MPI_Comm_rank(impl->comm, &rank);
    MPI_Comm_size(impl->comm, &size);
    MPI_Comm node = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split_type(impl->comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    return std::shared_ptr<MpiComm>(new MpiComm(std::move(impl), rank, size, local_rank, local_size, timeout_s));
}

MpiComm::MpiComm(std::unique_ptr<Impl> impl, int rank, int size, int local_rank, int local_size, double timeout_s)
    : impl_(std::move(impl)),
      rank_(rank),
      size_(size),
      local_rank_(local_rank),
      local_size_(local_size),
      timeout_s_(timeout_s) {}

MpiComm::~MpiComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

void MpiComm::abort(const std::string& message) const {
    std::fprintf(stderr, "trtllm rank %d: fatal: %s\n", rank_, message.c_str());
    std::fflush(stderr);
    // The launcher forwards our stderr through a proxy that the abort tears down: give it a moment.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    g_aborting = true;
    // The whole job, which is what we want anyway; MPICH 4.0 hangs aborting a duplicated comm.
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();  // MPI_Abort does not return; should an implementation return anyway
}

namespace {

// Polls a non-blocking operation to completion. Spins (yielding the core) for a while, then
// sleeps with a backoff: short collectives finish at spin latency, while a rank that waits long -
// an idle follower - leaves the cores to the ranks doing the work. A rank with a core of its own
// spins for up to a step's worth of time (20 ms): a follower waiting for the leader's next batch
// plan, which comes after the leader's host work on the last step's outputs, must not be asleep
// when it arrives (the leader's broadcast and the next step's collectives would wait for it to
// wake). Oversubscribed ranks (more on this machine than cores, as in CI) sleep after 2000 polls.
void wait_for(const MpiComm& comm, MPI_Request* request, const char* what, bool idle) {
    static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const auto spin_for = static_cast<unsigned>(comm.local_size()) <= cores ? std::chrono::milliseconds(20)
                                                                            : std::chrono::milliseconds(0);
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration<double>(comm.timeout_s());
    auto pause = std::chrono::microseconds(2);
    const auto max_pause = std::chrono::microseconds(idle ? 1000 : 200);
    for (int polls = 0;; ++polls) {
        int done = 0;
        const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) comm.abort(std::string(what) + " failed: " + mpi_error_string(rc));
        if (done) return;
        if (polls < 2000 || Clock::now() - start < spin_for) {
            std::this_thread::yield();
            continue;
        }
        if (!idle && Clock::now() > deadline) {
            comm.abort(std::string(what) + " did not complete within " + std::to_string(comm.timeout_s()) +
                       " s (TRTLLM_TP_TIMEOUT_S): another rank died, is stuck, or never reached it");
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, max_pause);
    }
}

}  // namespace

void MpiComm::check_all_ok(const std::string& local_error, const std::string& what) {
    constexpr int kMessageBytes = 1024;
    std::vector<char> mine(kMessageBytes, '\0');
    std::copy_n(local_error.begin(), std::min<size_t>(local_error.size(), kMessageBytes - 1), mine.begin());
    std::vector<char> all(static_cast<size_t>(kMessageBytes) * size_);
    MPI_Request request;
    check_mpi(MPI_Iallgather(mine.data(), kMessageBytes, MPI_CHAR, all.data(), kMessageBytes, MPI_CHAR, impl_->comm,
                             &request), "MPI_Iallgather (" + what + ")");
    wait_for(*this, &request, what.c_str(), false);
    std::string failures;
    for (int r = 0; r < size_; ++r) {
        const char* text = all.data() + static_cast<size_t>(r) * kMessageBytes;
        if (*text == '\0') continue;
        if (!failures.empty()) failures += "; ";
        failures += "rank " + std::to_string(r) + ": " + std::string(text);
    }
    if (failures.empty()) return;
    const std::string message = "tensor-parallel startup failed (" + what + ") on " + failures;
    if (rank_ == 0) {
        std::fprintf(stderr, "trtllm rank 0: error: %s\n", message.c_str());
        std::fflush(stderr);
    }
    // Nobody leaves before rank 0 has said why: a launcher may kill the job as soon as one exits.
    check_mpi(MPI_Ibarrier(impl_->comm, &request), "MPI_Ibarrier");
    wait_for(*this, &request, "the barrier after a failed startup", false);
    throw std::runtime_error(message);
}

int64_t MpiComm::all_reduce_min(int64_t value, const char* what) {
    int64_t result = value;
    MPI_Request request;
    check_mpi(MPI_Iallreduce(&value, &result, 1, MPI_INT64_T, MPI_MIN, impl_->comm, &request), what);
    wait_for(*this, &request, what, false);
    return result;
}

int64_t MpiComm::all_reduce_max(int64_t value, const char* what) {
    int64_t result = value;
    MPI_Request request;
    check_mpi(MPI_Iallreduce(&value, &result, 1, MPI_INT64_T, MPI_MAX, impl_->comm, &request), what);
    wait_for(*this, &request, what, false);
    return result;
}

void MpiComm::broadcast(void* data, int64_t bytes, int root, const char* what, bool idle) {
    auto* p = static_cast<char*>(data);
    do {  // INT_MAX-byte pieces; at least one call, so every rank takes part even for 0 bytes
        const int n = static_cast<int>(std::min<int64_t>(bytes, INT_MAX));
        MPI_Request request;
        const int rc = MPI_Ibcast(p, n, MPI_BYTE, root, impl_->comm, &request);
        if (rc != MPI_SUCCESS) abort(std::string(what) + " failed: " + mpi_error_string(rc));
        wait_for(*this, &request, what, idle);
        p += n;
        bytes -= n;
    } while (bytes > 0);
}

void MpiComm::all_reduce_sum(void* data, DType dtype, int64_t count, const char* what) {
    MPI_Request request;
    int rc = MPI_SUCCESS;
    if (dtype == DType::kFloat32 || dtype == DType::kInt32) {
        rc = MPI_Iallreduce(MPI_IN_PLACE, data, checked_count(count, what), mpi_type(dtype), MPI_SUM, impl_->comm,
                            &request);
        if (rc != MPI_SUCCESS) abort(std::string(what) + " failed: " + mpi_error_string(rc));
        wait_for(*this, &request, what, false);
        return;
    }
    if (dtype != DType::kBFloat16 && dtype != DType::kFloat16) {
        throw std::invalid_argument(std::string(what) + ": all_reduce of " + dtype_name(dtype) + " is not supported");
    }
    // 16-bit activations: one rounding, after the float32 sum over every rank, so the result does
    // not depend on how MPI pairs the ranks up.
    auto* h = static_cast<uint16_t*>(data);
    std::vector<float>& f = impl_->scratch;
    f.resize(static_cast<size_t>(count));
    const bool bf16 = dtype == DType::kBFloat16;
    for (int64_t i = 0; i < count; ++i) f[i] = bf16 ? bf16_to_float(h[i]) : fp16_to_float(h[i]);
    rc = MPI_Iallreduce(MPI_IN_PLACE, f.data(), checked_count(count, what), MPI_FLOAT, MPI_SUM, impl_->comm, &request);
    if (rc != MPI_SUCCESS) abort(std::string(what) + " failed: " + mpi_error_string(rc));
    wait_for(*this, &request, what, false);
    for (int64_t i = 0; i < count; ++i) h[i] = bf16 ? float_to_bf16(f[i]) : float_to_fp16(f[i]);
}

void MpiComm::all_gather(const void* in, void* out, DType dtype, int64_t count, const char* what) {
    const int n = checked_count(count, what);
    MPI_Request request;
    const int rc = MPI_Iallgather(in, n, mpi_type(dtype), out, n, mpi_type(dtype), impl_->comm, &request);
    if (rc != MPI_SUCCESS) abort(std::string(what) + " failed: " + mpi_error_string(rc));
    wait_for(*this, &request, what, false);
}

MpiComm::Lease::Lease(std::shared_ptr<MpiComm> comm) : comm_(std::move(comm)) {
    if (comm_->in_use_.exchange(true)) {
        throw std::runtime_error("this process's MPI communicator already drives a tensor-parallel executor; close "
                                 "that one first (one per process at a time)");
    }
}

namespace {

class MpiCommunicator final : public Communicator {
public:
    explicit MpiCommunicator(std::shared_ptr<MpiComm> comm) : comm_(std::move(comm)) {}
    int rank() const override { return comm_->rank(); }
    int size() const override { return comm_->size(); }
    void all_reduce_sum(void* data, DType dtype, int64_t count) override {
        comm_->all_reduce_sum(data, dtype, count, "all_reduce");
    }
    void all_gather(const void* in, void* out, DType dtype, int64_t count) override {
        comm_->all_gather(in, out, dtype, count, "all_gather");
    }

private:
    std::shared_ptr<MpiComm> comm_;
};

}  // namespace

std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<MpiComm> comm) {
    return std::make_shared<MpiCommunicator>(std::move(comm));
}

}  // namespace trtllm
