// Python surface of the MPI communicator: trtllm_runtime._core.MpiComm (and mpi_available).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "trtllm/mpi_comm.h"

namespace py = pybind11;

namespace {

// A numpy array's buffer as `dtype` elements, checked.
const void* checked_buffer(const py::array& a, trtllm::DType dtype, const char* what, bool writeable) {
    if (!(a.flags() & py::array::c_style) || (writeable && !a.writeable())) {
        throw py::value_error(std::string(what) + " needs a " + (writeable ? "writeable " : "") +
                              "C-contiguous array");
    }
    if (static_cast<size_t>(a.itemsize()) != trtllm::dtype_size(dtype)) {
        throw py::value_error(std::string(what) + ": array items are " + std::to_string(a.itemsize()) +
                              " bytes, " + trtllm::dtype_name(dtype) + " needs " +
                              std::to_string(trtllm::dtype_size(dtype)));
    }
    return a.data();
}

}  // namespace

void bind_mpi(py::module_& m) {
    m.attr("mpi_available") = trtllm::mpi_available();
    m.attr("mpi_library_version") = trtllm::mpi_library_version();

    py::class_<trtllm::MpiComm, std::shared_ptr<trtllm::MpiComm>>(
        m, "MpiComm", "An MPI communicator over the ranks of an mpirun job (tensor parallelism).")
        .def_static("world", &trtllm::MpiComm::world, py::arg("timeout_s") = 300.0,
                    py::call_guard<py::gil_scoped_release>(),
                    "Initializes MPI if needed and returns a communicator over all ranks of the job (collective). "
                    "timeout_s bounds every collective but the followers' idle wait.")
        .def_property_readonly("rank", &trtllm::MpiComm::rank)
        .def_property_readonly("size", &trtllm::MpiComm::size)
        .def_property_readonly("local_rank", &trtllm::MpiComm::local_rank)
        .def_property_readonly("local_size", &trtllm::MpiComm::local_size)
        .def_property_readonly("timeout_s", &trtllm::MpiComm::timeout_s)
        .def("check_all_ok", &trtllm::MpiComm::check_all_ok, py::arg("error"), py::arg("what"),
             py::call_guard<py::gil_scoped_release>(),
             "Collective: pass this rank's error ('' when fine). Raises RuntimeError on every rank when any "
             "rank failed, naming each failed rank and its error.")
        // For tests of the data plane's numerics; the backend calls the same C++ functions.
        .def(
            "all_reduce_sum",
            [](trtllm::MpiComm& c, py::array a, const std::string& dtype) {
                const trtllm::DType dt = trtllm::dtype_from_name(dtype);
                void* data = const_cast<void*>(checked_buffer(a, dt, "all_reduce_sum", true));
                py::gil_scoped_release release;
                c.all_reduce_sum(data, dt, a.size(), "all_reduce_sum");
            },
            py::arg("array"), py::arg("dtype"),
            "Collective, in place: the sum over the ranks (bfloat16/float16 given as uint16 bits).")
        .def(
            "all_gather",
            [](trtllm::MpiComm& c, py::array a, const std::string& dtype) {
                const trtllm::DType dt = trtllm::dtype_from_name(dtype);
                const void* data = checked_buffer(a, dt, "all_gather", false);
                py::array out = py::module_::import("numpy").attr("empty")(c.size() * a.size(), a.dtype());
                void* out_data = out.mutable_data();
                py::gil_scoped_release release;
                c.all_gather(data, out_data, dt, a.size(), "all_gather");
                return out;
            },
            py::arg("array"), py::arg("dtype"), "Collective: every rank's array, concatenated in rank order.");
}
