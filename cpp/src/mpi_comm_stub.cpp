// MpiComm in a build without MPI: no communicator can be made, so no other member ever runs.
#include <stdexcept>

#include "trtllm/mpi_comm.h"

namespace trtllm {

bool mpi_available() { return false; }
std::string mpi_library_version() { return ""; }

struct MpiComm::Impl {};

namespace {
[[noreturn]] void no_mpi() {
    throw std::runtime_error(
        "this trtllm_runtime was built without MPI, which tensor parallelism (tp_size > 1) needs: install an "
        "MPI with its headers (e.g. `apt-get install mpich libmpich-dev` or `libopenmpi-dev openmpi-bin`) and "
        "reinstall the package (pip install -e .)");
}
}  // namespace

std::shared_ptr<MpiComm> MpiComm::world(double) { no_mpi(); }
MpiComm::~MpiComm() = default;
void MpiComm::check_all_ok(const std::string&, const std::string&) { no_mpi(); }
int64_t MpiComm::all_reduce_min(int64_t, const char*) { no_mpi(); }
int64_t MpiComm::all_reduce_max(int64_t, const char*) { no_mpi(); }
void MpiComm::broadcast(void*, int64_t, int, const char*, bool) { no_mpi(); }
void MpiComm::all_reduce_sum(void*, DType, int64_t, const char*) { no_mpi(); }
void MpiComm::all_gather(const void*, void*, DType, int64_t, const char*) { no_mpi(); }
void MpiComm::abort(const std::string&) const { no_mpi(); }
MpiComm::Lease::Lease(std::shared_ptr<MpiComm>) { no_mpi(); }
std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<MpiComm>) { no_mpi(); }

}  // namespace trtllm
