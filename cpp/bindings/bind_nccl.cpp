// Built with NCCL only: checks of the NCCL communicator and its peer all-reduce from Python
// (tests/test_tp_mpi.py), host arrays in and out through device buffers, and the timing of both
// all-reduce paths (scripts/bench_all_reduce.py).
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective/collective_cuda.h"
#include "trtllm/cuda_utils.h"
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

    m.def(
        "all_reduce_check",
        [](std::shared_ptr<trtllm::MpiComm> comm, const std::vector<py::array>& arrays, const std::string& dtype,
           bool peer) {
            const trtllm::DType dt = trtllm::dtype_from_name(dtype);
            size_t max_bytes = 0;
            for (const py::array& a : arrays) {
                if (!(a.flags() & py::array::c_style) || static_cast<size_t>(a.itemsize()) != trtllm::dtype_size(dt)) {
                    throw py::value_error("all_reduce_check needs C-contiguous arrays of " + dtype + " items");
                }
                max_bytes = std::max(max_bytes, static_cast<size_t>(a.nbytes()));
            }
            std::vector<py::array> sums;
            for (const py::array& a : arrays) sums.push_back(py::module_::import("numpy").attr("empty_like")(a));
            {
                py::gil_scoped_release release;
                trtllm::NcclCommunicator nccl(comm);
                if (peer && !nccl.enable_peer_all_reduce(dt, max_bytes)) {
                    throw std::runtime_error("the peer all-reduce could not be enabled on these GPUs");
                }
                auto d_in = device_bytes(max_bytes);
                auto d_out = device_bytes(max_bytes);
                for (size_t i = 0; i < arrays.size(); ++i) {
                    const size_t bytes = static_cast<size_t>(arrays[i].nbytes());
                    const int64_t count = static_cast<int64_t>(arrays[i].size());
                    if (nccl.uses_peer_all_reduce(dt, count) != peer) {
                        throw std::runtime_error("all_reduce_check: the array of " + std::to_string(bytes) +
                                                 " bytes did not take the path asked for");
                    }
                    copy(d_in.get(), arrays[i].data(), bytes, cudaMemcpyHostToDevice);
                    // Twice, the second in place: the same sum both times, on every call's epoch.
                    nccl.all_reduce_sum(d_in.get(), d_out.get(), dt, count, nullptr);
                    nccl.all_reduce_sum(d_in.get(), d_in.get(), dt, count, nullptr);
                    nccl.synchronize(nullptr);
                    copy(sums[i].mutable_data(), d_out.get(), bytes, cudaMemcpyDeviceToHost);
                    std::vector<char> again(bytes);
                    copy(again.data(), d_in.get(), bytes, cudaMemcpyDeviceToHost);
                    if (std::memcmp(again.data(), sums[i].data(), bytes) != 0) {
                        throw std::runtime_error("all_reduce_check: the in-place sum differs from the first");
                    }
                }
            }
            return sums;
        },
        py::arg("comm"), py::arg("arrays"), py::arg("dtype"), py::arg("peer"),
        "Collective: each array's sum over the ranks, through the peer all-reduce (peer=True; an error where it "
        "cannot be enabled or an array would not take it) or NCCL, on one communicator in order.");

    m.def(
        "all_reduce_add_rms_norm_check",
        [](std::shared_ptr<trtllm::MpiComm> comm, const std::vector<std::vector<py::array>>& partials,
           const std::vector<py::array>& residuals, const std::vector<py::array>& weights,
           const std::vector<int64_t>& rows, const std::string& dtype, float eps) {
            const trtllm::DType dt = trtllm::dtype_from_name(dtype);
            const size_t esz = trtllm::dtype_size(dt);
            if (partials.size() != residuals.size() || partials.size() != weights.size() || partials.size() != rows.size()) {
                throw py::value_error("all_reduce_add_rms_norm_check: one residual, weight and row count per case");
            }
            const auto check_array = [&](const py::array& a, int64_t items) {
                if (!(a.flags() & py::array::c_style) || static_cast<size_t>(a.itemsize()) != esz || a.size() != items) {
                    throw py::value_error("all_reduce_add_rms_norm_check needs C-contiguous arrays of " + dtype +
                                          " items, rows x dim of them (dim: the weight's)");
                }
            };
            size_t max_bytes = 0, max_dim = 0;
            for (size_t c = 0; c < partials.size(); ++c) {
                const int64_t dim = static_cast<int64_t>(weights[c].size());
                check_array(weights[c], dim);
                check_array(residuals[c], rows[c] * dim);
                for (const py::array& a : partials[c]) check_array(a, rows[c] * dim);
                max_bytes = std::max(max_bytes, static_cast<size_t>(rows[c] * dim) * esz);
                max_dim = std::max(max_dim, static_cast<size_t>(dim));
            }
            std::vector<std::vector<std::vector<char>>> host(partials.size());  // per case, its outputs in order
            {
                py::gil_scoped_release release;
                trtllm::NcclCommunicator nccl(comm);  // one for all cases: the calls go on cycling through the slots
                if (!nccl.enable_peer_all_reduce(dt, max_bytes)) {
                    throw std::runtime_error("the peer all-reduce could not be enabled on these GPUs");
                }
                auto d_partial = device_bytes(max_bytes), d_residual = device_bytes(max_bytes);
                auto d_weight = device_bytes(max_dim * esz);
                auto d_normed = device_bytes(max_bytes), d_sum = device_bytes(max_bytes);
                for (size_t c = 0; c < partials.size(); ++c) {
                    const int64_t dim = static_cast<int64_t>(weights[c].size()), count = rows[c] * dim;
                    const size_t bytes = static_cast<size_t>(count) * esz;
                    const trtllm::kernels::PeerBuffers* peers = nccl.peer_buffers(dt, count);
                    copy(d_residual.get(), residuals[c].data(), bytes, cudaMemcpyHostToDevice);
                    copy(d_weight.get(), weights[c].data(), static_cast<size_t>(dim) * esz, cudaMemcpyHostToDevice);
                    if (peers == nullptr || !trtllm::kernels::peer_add_rms_norm_fits(
                                                dt, dim, {d_partial.get(), d_residual.get(), d_weight.get(), d_sum.get()})) {
                        throw std::runtime_error("all_reduce_add_rms_norm_check: the fused kernel does not apply to case " +
                                                 std::to_string(c));
                    }
                    // Call j: the fused kernel for even j, the plain peer all-reduce (into d_sum) for odd j.
                    for (size_t j = 0; j < partials[c].size(); ++j) {
                        copy(d_partial.get(), partials[c][j].data(), bytes, cudaMemcpyHostToDevice);
                        if (j % 2 == 0) {
                            trtllm::kernels::peer_all_reduce_add_rms_norm_cuda(
                                d_partial.get(), d_residual.get(), d_weight.get(), d_normed.get(), d_sum.get(), dt, rows[c],
                                dim, eps, *peers, nullptr);
                        } else {
                            nccl.all_reduce_sum(d_partial.get(), d_sum.get(), dt, count, nullptr);
                        }
                        nccl.synchronize(nullptr);
                        std::vector<char> out(bytes);
                        if (j % 2 == 0) {
                            copy(out.data(), d_normed.get(), bytes, cudaMemcpyDeviceToHost);
                            host[c].push_back(out);
                        }
                        copy(out.data(), d_sum.get(), bytes, cudaMemcpyDeviceToHost);
                        host[c].push_back(std::move(out));
                    }
                }
            }
            std::vector<std::vector<py::array>> results(partials.size());
            for (size_t c = 0; c < partials.size(); ++c) {
                for (const std::vector<char>& out : host[c]) {
                    py::array a = py::module_::import("numpy").attr("empty_like")(residuals[c]);
                    std::memcpy(a.mutable_data(), out.data(), out.size());
                    results[c].push_back(a);
                }
            }
            return results;
        },
        py::arg("comm"), py::arg("partials"), py::arg("residuals"), py::arg("weights"), py::arg("rows"), py::arg("dtype"),
        py::arg("eps"),
        "Collective: per case, its calls in turn on one communicator: even calls all_reduce_add_rms_norm through the "
        "fused peer kernel (returning normed, then sum), odd calls the plain peer all-reduce (returning the sum).");

    m.def(
        "all_reduce_microseconds",
        [](std::shared_ptr<trtllm::MpiComm> comm, const std::vector<int64_t>& sizes_bytes, bool peer) {
            constexpr int kPerGraph = 64, kReplays = 20;
            std::vector<double> result;
            py::gil_scoped_release release;
            trtllm::NcclCommunicator nccl(comm);
            const size_t max_bytes = sizes_bytes.empty() ? 0 : static_cast<size_t>(
                *std::max_element(sizes_bytes.begin(), sizes_bytes.end()));
            if (peer && !nccl.enable_peer_all_reduce(trtllm::DType::kBFloat16, max_bytes)) {
                throw std::runtime_error("the peer all-reduce could not be enabled on these GPUs");
            }
            auto d_buf = device_bytes(max_bytes);
            trtllm::CudaStream stream;
            trtllm::CudaEvent begin, end;
            for (const int64_t bytes : sizes_bytes) {
                const int64_t count = bytes / 2;  // bfloat16
                CHECK_CUDA(cudaMemsetAsync(d_buf.get(), 0, static_cast<size_t>(bytes), stream.get()));
                // As in a decode step: captured into a CUDA graph, back to back.
                cudaGraph_t graph = nullptr;
                CHECK_CUDA(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
                for (int i = 0; i < kPerGraph; ++i) {
                    nccl.all_reduce_sum(d_buf.get(), d_buf.get(), trtllm::DType::kBFloat16, count, stream.get());
                }
                CHECK_CUDA(cudaStreamEndCapture(stream.get(), &graph));
                cudaGraphExec_t exec = nullptr;
                CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
                for (int i = 0; i < 3; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream.get()));
                CHECK_CUDA(cudaEventRecord(begin.get(), stream.get()));
                for (int i = 0; i < kReplays; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream.get()));
                CHECK_CUDA(cudaEventRecord(end.get(), stream.get()));
                nccl.synchronize(stream.get());
                float ms = 0;
                CHECK_CUDA(cudaEventElapsedTime(&ms, begin.get(), end.get()));
                result.push_back(1000.0 * ms / (kPerGraph * kReplays));
                cudaGraphExecDestroy(exec);
                cudaGraphDestroy(graph);
            }
            return result;
        },
        py::arg("comm"), py::arg("sizes_bytes"), py::arg("peer"),
        "Collective: microseconds per bfloat16 all-reduce of each size, 64 back to back in a CUDA graph, through the "
        "peer all-reduce (peer=True) or NCCL.");
}
