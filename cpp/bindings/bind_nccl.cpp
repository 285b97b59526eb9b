// Built with NCCL only: a check of the NCCL communicator from Python (tests/test_tp_mpi.py),
// host arrays in and out through device buffers.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "trtllm/nccl_comm.h"

namespace py = pybind11;

namespace {

struct CudaFree {
    void operator()(void* p) const noexcept { cudaFree(p); }
};

std::unique_ptr<void, CudaFree> device_bytes(size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) throw std::runtime_error("cudaMalloc of " + std::to_string(bytes) + " bytes failed");
    return std::unique_ptr<void, CudaFree>(p);
}

void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    const cudaError_t err = cudaMemcpy(dst, src, bytes, kind);
    if (err != cudaSuccess) throw std::runtime_error(std::string("cudaMemcpy failed: ") + cudaGetErrorString(err));
}

}  // namespace

void bind_nccl(py::module_& m) {
    m.def(
        "nccl_collectives_check",
        [](std::shared_ptr<trtllm::MpiComm> comm, py::array a, const std::string& dtype) {
            const trtllm::DType dt = trtllm::dtype_from_name(dtype);
            if (!(a.flags() & py::array::c_style) || static_cast<size_t>(a.itemsize()) != trtllm::dtype_size(dt)) {
                throw py::value_error("nccl_collectives_check needs a C-contiguous array of " + dtype + " items");
            }
            const size_t bytes = static_cast<size_t>(a.nbytes());
            py::array sum = py::module_::import("numpy").attr("empty_like")(a);
            py::array gathered = py::module_::import("numpy").attr("empty")(comm->size() * a.size(), a.dtype());
            {
                py::gil_scoped_release release;
                trtllm::NcclCommunicator nccl(comm);  // on GPU local_rank, made current
                auto d_in = device_bytes(bytes);
                auto d_sum = device_bytes(bytes);
                auto d_gathered = device_bytes(bytes * comm->size());
                copy(d_in.get(), a.data(), bytes, cudaMemcpyHostToDevice);
                nccl.all_gather(d_in.get(), d_gathered.get(), dt, a.size(), nullptr);
                nccl.all_reduce_sum(d_in.get(), d_sum.get(), dt, a.size(), nullptr);
                nccl.synchronize(nullptr);
                copy(sum.mutable_data(), d_sum.get(), bytes, cudaMemcpyDeviceToHost);
                copy(gathered.mutable_data(), d_gathered.get(), bytes * comm->size(), cudaMemcpyDeviceToHost);
            }
            return py::make_tuple(sum, gathered);
        },
        py::arg("comm"), py::arg("array"), py::arg("dtype"),
        "Collective: (the sum over the ranks, every rank's array in rank order), through NCCL on this rank's GPU "
        "(its local rank).");
}
