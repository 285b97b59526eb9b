// The pybind11 module trtllm_runtime._core: the C++ runtime's Python surface.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <system_error>

#include "trtllm/device_info.h"
#include "trtllm/engine_file.h"

namespace py = pybind11;

// Defined in the bind_*.cpp files beside this one.
void bind_executor(py::module_& m);
void bind_kernels(py::module_& m);
void bind_kvsched(py::module_& m);
void bind_mpi(py::module_& m);
#ifdef TRTLLM_WITH_NCCL
void bind_nccl(py::module_& m);
#endif
void bind_sampler(py::module_& m);
#ifdef TRTLLM_WITH_CUDA
void bind_cuda_kernels(py::module_& m);
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "C++ core of trtllm_runtime";

#ifdef TRTLLM_WITH_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif

  m.attr("engine_format_version") = trtllm::kEngineFormatVersion;
  bind_executor(m);
  bind_kernels(m);
  bind_kvsched(m);
  bind_mpi(m);
#ifdef TRTLLM_WITH_NCCL
  m.attr("nccl_available") = true;
  bind_nccl(m);
#else
  m.attr("nccl_available") = false;
#endif
#ifdef TRTLLM_WITH_CUDA
  bind_cuda_kernels(m);
#endif

  py::register_exception<trtllm::EngineFormatError>(m, "EngineFormatError", PyExc_ValueError);
  // OSError(errno, message) picks the matching subclass, e.g. FileNotFoundError for ENOENT.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::system_error& e) {
      const int code = e.code().category() == std::generic_category() ? e.code().value() : 0;
      py::object err = py::reinterpret_steal<py::object>(PyObject_CallFunction(
          PyExc_OSError, "is", code, e.what()));
      if (err) PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    }
  });

  m.def("cuda_available", &trtllm::cuda_available,
        "True when the module was built with CUDA and a CUDA device is visible.");
  m.def("cuda_device_sm_arch", &trtllm::cuda_device_sm_arch, py::arg("device") = 0,
        "SM architecture of a CUDA device as major*10+minor (90 for H100); RuntimeError if "
        "there is no such device or the module was built without CUDA.");

  m.def(
      "crc32",
      [](py::buffer data, std::uint32_t crc) {
        py::buffer_info info = data.request();
        if (!PyBuffer_IsContiguous(info.view(), 'C')) {
          throw py::value_error("crc32 needs a C-contiguous buffer");
        }
        const auto size = static_cast<std::size_t>(info.size * info.itemsize);
        py::gil_scoped_release release;
        return trtllm::crc32(info.ptr, size, crc);
      },
      py::arg("data"), py::arg("crc") = 0,
      "CRC-32 (zlib/IEEE polynomial) of a buffer, equal to zlib.crc32(data, crc).");

  py::class_<trtllm::EngineFile>(m, "EngineFile", py::buffer_protocol(), R"doc(
A validated, read-only memory map of an engine file (docs/engine_format.md).

The object supports the buffer protocol: memoryview(f) is the weight blob (data_offset ..
end of file), read-only and zero-copy; views keep the mapping alive.)doc")
      .def(py::init<const std::string&, bool>(), py::arg("path"), py::arg("verify_checksum") = true,
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("path", &trtllm::EngineFile::path)
      .def_property_readonly("format_version", &trtllm::EngineFile::format_version)
      .def_property_readonly("file_size", &trtllm::EngineFile::file_size)
      .def_property_readonly("checksum", &trtllm::EngineFile::checksum)
      .def_property_readonly("data_size", &trtllm::EngineFile::data_size)
      .def_property_readonly("metadata_json",
                             [](const trtllm::EngineFile& f) {
                               const std::string_view json = f.metadata_json();
                               PyObject* text = PyUnicode_DecodeUTF8(
                                   json.data(), static_cast<py::ssize_t>(json.size()), "strict");
                               if (text == nullptr) {
                                 PyErr_Clear();
                                 throw trtllm::EngineFormatError(
                                     f.path() + ": engine metadata is not valid UTF-8");
                               }
                               return py::reinterpret_steal<py::str>(text);
                             })
      .def_buffer([](const trtllm::EngineFile& f) {
        return py::buffer_info(const_cast<std::byte*>(f.data()), 1,
                               py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(f.data_size())}, {py::ssize_t{1}},
                               /*readonly=*/true);
      });

  bind_sampler(m);
}
