// MPI for tensor parallelism: one process per rank, launched by mpirun/mpiexec.
//
// MpiComm is the control plane (the startup agreement, the leader's per-iteration broadcast of
// the batch plan) and, on CPU, the data plane behind the graph's all_reduce/all_gather ops
// (make_mpi_communicator). Built without MPI (TRTLLM_MPI=OFF or none found), every entry point
// throws std::runtime_error saying so; nothing else in the runtime changes.
//
// Threading: MPI is initialized with MPI_THREAD_SERIALIZED. MPI calls are serialized by
// construction rather than by a lock: a TP executor makes its startup collectives on the thread
// that constructs it, then only its worker thread calls MPI until shutdown() joins it, and the
// communicator is freed after that. One TP executor per communicator at a time (enforced).
//
// Hangs: every collective is non-blocking and polled against a deadline (timeout_s). A rank that
// misses one - dead, stuck, or never reached it - makes the waiting rank print what it waited
// for and call MPI_Abort, which ends the whole job. The one wait without a deadline is a
// follower idling for the leader's next iteration (the leader may legitimately wait for
// requests for hours); it polls with a backing-off sleep, so an idle follower costs no core.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "trtllm/backend.h"
#include "trtllm/dtype.h"

namespace trtllm {

// True when this build has the MPI communicator.
bool mpi_available();
// The MPI library this build runs against (MPI_Get_library_version, first line); "" without MPI.
std::string mpi_library_version();

class MpiComm {
public:
    // Initializes MPI on first use (MPI_Init_thread, MPI_THREAD_SERIALIZED; finalized at process
    // exit) and returns a communicator over a duplicate of MPI_COMM_WORLD. Collective over the
    // world. An MPI initialized by someone else (e.g. mpi4py) is used as is when it provides at
    // least MPI_THREAD_SERIALIZED.
    static std::shared_ptr<MpiComm> world(double timeout_s);

    ~MpiComm();
    MpiComm(const MpiComm&) = delete;
    MpiComm& operator=(const MpiComm&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }
    // This rank's index among the ranks on its machine, and their count (one GPU per rank).
    int local_rank() const { return local_rank_; }
    int local_size() const { return local_size_; }
    double timeout_s() const { return timeout_s_; }

    // Startup agreement: every rank passes its own error ("" when fine). Throws
    // std::runtime_error on every rank when any rank failed; the message names each failed rank
    // and its error. Rank 0 also writes it to stderr before the ranks part, so the launcher
    // never kills rank 0 before the message is out.
    void check_all_ok(const std::string& local_error, const std::string& what);
    int64_t all_reduce_min(int64_t value, const char* what);
    int64_t all_reduce_max(int64_t value, const char* what);

    // Broadcast of raw bytes from `root`. `idle`: no deadline (a follower waiting for work).
    void broadcast(void* data, int64_t bytes, int root, const char* what, bool idle = false);

    // Data plane (CPU): in-place sum over the ranks; float32 as is, bfloat16/float16 converted
    // to float32, summed, and rounded back once (round to nearest even). int32 sums exactly.
    void all_reduce_sum(void* data, DType dtype, int64_t count, const char* what);
    // out: size() * count elements, rank order.
    void all_gather(const void* in, void* out, DType dtype, int64_t count, const char* what);

    // Prints "trtllm rank R: fatal: <message>" and ends the whole job (MPI_Abort).
    [[noreturn]] void abort(const std::string& message) const;

    // Held by the one executor that drives this communicator, for its lifetime: its MPI calls
    // are then the only ones (see Threading above). Throws if another executor holds it.
    class Lease {
    public:
        explicit Lease(std::shared_ptr<MpiComm> comm);
        ~Lease() { comm_->in_use_ = false; }
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;

    private:
        std::shared_ptr<MpiComm> comm_;
    };

    struct Impl;

private:
    MpiComm(std::unique_ptr<Impl> impl, int rank, int size, int local_rank, int local_size, double timeout_s);

    std::unique_ptr<Impl> impl_;
    int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
    double timeout_s_ = 300.0;
    std::atomic<bool> in_use_{false};
};

// The CPU backend's view of `comm`: all_reduce_sum / all_gather as above.
std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<MpiComm> comm);

}  // namespace trtllm
