// _core.cuda_kernels: the CUDA kernels of plugins/ over numpy arrays, for tests (same calling
// conventions as _core.kernels: 16-bit activations travel as uint16 bit patterns). Each call
// copies its inputs to the device, poisons the outputs with NaN bytes (so an element the kernel
// never writes shows up), runs the kernel, synchronizes and copies the results back.
// Quantized arrays travel as raw bytes, as in _core.kernels: float8_e4m3fn as uint8 bit patterns, int8 as int8.
// Also _core.cuda_autotune_gemm, the builder's tactic search.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "attention/attention_cuda.h"
#include "collective/collective_cuda.h"
#include "elementwise/elementwise_cuda.h"
#include "embedding/embedding_cuda.h"
#include "gemm/gemm_cuda.h"
#include "gemm/quant_gemm_cuda.h"
#include "gemm/weight_only_cuda.h"
#include "norm/norm_cuda.h"
#include "quantization/quantize.h"
#include "quantization/quantize_cuda.h"
#include "sampling/sampling_cuda.h"
#include "trtllm/cuda_utils.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

using trtllm::DeviceBuffer;
using trtllm::DType;

DType float_dtype(const std::string& name) {
    if (name == "float32") return DType::kFloat32;
    if (name == "bfloat16") return DType::kBFloat16;
    if (name == "float16") return DType::kFloat16;
    throw std::invalid_argument("dtype must be 'float32', 'bfloat16' or 'float16', got '" + name + "'");
}

DType quantized_dtype(const std::string& name) {
    if (name == "float8_e4m3fn") return DType::kFloat8E4M3;
    if (name == "int8") return DType::kInt8;
    throw std::invalid_argument("quantized dtype must be 'float8_e4m3fn' or 'int8', got '" + name + "'");
}

// A GEMM's input dtype: a float activation dtype, or a quantized one (fp8_linear / int8_linear).
DType gemm_input_dtype(const std::string& name) {
    return name == "float8_e4m3fn" || name == "int8" ? quantized_dtype(name) : float_dtype(name);
}

py::array contiguous(const py::array& a) { return py::array::ensure(a, py::array::c_style); }

// Device copy of an array whose elements are `elem_bytes` wide (checked).
DeviceBuffer upload(const py::array& a_in, size_t elem_bytes, const char* name) {
    const py::array a = contiguous(a_in);
    if (static_cast<size_t>(a.itemsize()) != elem_bytes) {
        throw std::invalid_argument(std::string(name) + " has " + std::to_string(a.itemsize()) +
                                    "-byte elements, expected " + std::to_string(elem_bytes));
    }
    DeviceBuffer d(static_cast<size_t>(a.nbytes()));
    CHECK_CUDA(cudaMemcpy(d.get(), a.data(), static_cast<size_t>(a.nbytes()), cudaMemcpyHostToDevice));
    return d;
}

DeviceBuffer poisoned(size_t bytes) {
    DeviceBuffer d(bytes);
    CHECK_CUDA(cudaMemset(d.get(), 0xff, bytes));
    return d;
}

py::array download(const DeviceBuffer& d, DType dt, const std::vector<py::ssize_t>& shape) {
    CHECK_CUDA(cudaDeviceSynchronize());
    py::array out = dt == DType::kFloat32 ? py::array(py::array_t<float>(shape)) : py::array(py::array_t<uint16_t>(shape));
    CHECK_CUDA(cudaMemcpy(out.mutable_data(), d.get(), static_cast<size_t>(out.nbytes()), cudaMemcpyDeviceToHost));
    return out;
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }
size_t esz(DType dt) { return trtllm::dtype_size(dt); }

py::array download_quantized(const DeviceBuffer& d, DType dt, const std::vector<py::ssize_t>& shape) {
    CHECK_CUDA(cudaDeviceSynchronize());
    py::array out = dt == DType::kInt8 ? py::array(py::array_t<int8_t>(shape)) : py::array(py::array_t<uint8_t>(shape));
    CHECK_CUDA(cudaMemcpy(out.mutable_data(), d.get(), static_cast<size_t>(out.nbytes()), cudaMemcpyDeviceToHost));
    return out;
}

// An output quantization on the device, from float32 scales [1] or [cols] (1 / scale as the backend computes it).
struct DeviceQuant {
    DeviceBuffer inv_scale;
    trtllm::kernels::OutputQuantCuda q;
};

std::optional<DeviceQuant> device_quant(const std::optional<py::array>& scale, const std::optional<std::string>& out_dtype) {
    if (scale.has_value() != out_dtype.has_value()) throw std::invalid_argument("pass out_scale and out_dtype together");
    if (!scale) return std::nullopt;
    const py::array s = contiguous(*scale);
    if (std::string(py::str(s.dtype())) != "float32") throw std::invalid_argument("out_scale must be float32");
    const auto host = trtllm::kernels::make_output_quant(quantized_dtype(*out_dtype), static_cast<const float*>(s.data()),
                                                         static_cast<int64_t>(s.size()));
    DeviceQuant d;
    d.inv_scale = DeviceBuffer(host.inv_scale.size() * sizeof(float));
    CHECK_CUDA(cudaMemcpy(d.inv_scale.get(), host.inv_scale.data(), d.inv_scale.bytes(), cudaMemcpyHostToDevice));
    d.q = {host.dtype, d.inv_scale.as<float>(), static_cast<int64_t>(host.inv_scale.size())};
    return d;
}

const trtllm::kernels::OutputQuantCuda* quant_ptr(const std::optional<DeviceQuant>& d) { return d ? &d->q : nullptr; }

// Bytes of an output of `elems` elements: 1 per element when quantized.
size_t out_bytes(const std::optional<DeviceQuant>& d, DType dt, int64_t elems) {
    return static_cast<size_t>(elems) * (d ? 1 : esz(dt));
}

py::array download_out(const DeviceBuffer& b, const std::optional<DeviceQuant>& d, DType dt,
                       const std::vector<py::ssize_t>& shape) {
    return d ? download_quantized(b, d->q.dtype, shape) : download(b, dt, shape);
}

py::array gemm(const py::array& x, const py::array& w, const std::optional<py::array>& bias, const std::string& dtype,
               const std::optional<std::string>& out_dtype, const std::optional<std::string>& algo) {
    const DType xdt = float_dtype(dtype), ydt = float_dtype(out_dtype.value_or(dtype));
    if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1)) throw std::invalid_argument("need x [m, k], weight [n, k]");
    const int64_t m = x.shape(0), k = x.shape(1), n = w.shape(0);
    trtllm::kernels::GemmShape shape{n, k, xdt, ydt, bias.has_value()};
    DeviceBuffer dx = upload(x, esz(xdt), "x"), dw = upload(w, esz(xdt), "weight");
    DeviceBuffer db = bias ? upload(*bias, esz(ydt), "bias (in out_dtype)") : DeviceBuffer();
    DeviceBuffer dy = poisoned(static_cast<size_t>(m * n) * esz(ydt));
    trtllm::kernels::CublasLtGemm g;
    std::optional<trtllm::kernels::GemmTactic> a;
    if (algo) a = trtllm::kernels::gemm_tactic_from_string(*algo);
    g.run(shape, m, dx.get(), dw.get(), bias ? db.get() : nullptr, dy.get(), a ? &*a : nullptr, nullptr);
    return download(dy, ydt, {m, n});
}

// weight in the CUDA layout `weight_layout` (trtllm_build.passes.weight_layout.to_cuda_layout), uint8.
py::array weight_only_linear(const py::array& x, const py::array& weight, const py::array& weight_scale,
                             const std::string& dtype, int weight_bits, int64_t group_size,
                             const std::optional<py::array>& pre_quant_scale, const std::optional<py::array>& bias,
                             const std::optional<std::string>& path, const std::optional<std::string>& out_dtype,
                             const std::string& weight_layout) {
    const DType dt = float_dtype(dtype);
    const DType ydt = out_dtype ? float_dtype(*out_dtype) : dt;
    if (x.ndim() != 2 || weight.ndim() != 2) throw std::invalid_argument("need x [m, k] and weight [n, k or k / 2]");
    if (std::string(py::str(weight.dtype())) != "uint8") throw std::invalid_argument("weight must be uint8 (CUDA layout)");
    trtllm::kernels::WeightOnlyGemmCuda w;
    w.n = weight.shape(0);
    w.k = weight.shape(1) * (weight_bits == 4 ? 2 : 1);
    w.weight_bits = weight_bits;
    w.group_size = group_size;
    w.dtype = dt;
    w.out_dtype = ydt;
    w.mma_tiles = trtllm::kernels::weight_only_mma_tiles_from_name(weight_layout);
    const int64_t m = x.shape(0);
    if (x.shape(1) != w.k || group_size <= 0 || weight_scale.size() != w.n * (w.k / group_size) ||
        (pre_quant_scale && pre_quant_scale->size() != w.k) || (bias && bias->size() != w.n)) {
        throw std::invalid_argument("weight_only_linear: x, weight_scale, pre_quant_scale or bias do not match the weight");
    }
    DeviceBuffer dx = upload(x, esz(dt), "x"), dw = upload(weight, 1, "weight"), ds = upload(weight_scale, esz(dt), "weight_scale");
    DeviceBuffer dp = pre_quant_scale ? upload(*pre_quant_scale, esz(dt), "pre_quant_scale") : DeviceBuffer();
    DeviceBuffer db = bias ? upload(*bias, esz(dt), "bias") : DeviceBuffer();
    w.weight = dw.get();
    w.scale = ds.get();
    w.pre_quant_scale = pre_quant_scale ? dp.get() : nullptr;
    w.bias = bias ? db.get() : nullptr;
    trtllm::kernels::check_weight_only_gemm(w);
    DeviceBuffer scratch(static_cast<size_t>(trtllm::kernels::weight_only_scratch_elems(w, m)) * esz(dt));
    DeviceBuffer dy = poisoned(static_cast<size_t>(m * w.n) * esz(ydt));
    trtllm::kernels::CublasLtGemm g;
    std::optional<trtllm::kernels::WeightOnlyPath> p;
    if (path) p = trtllm::kernels::weight_only_path_from_name(*path);
    trtllm::kernels::weight_only_gemm_cuda(w, dx.get(), dy.get(), m, scratch.get(), g, nullptr, p ? &*p : nullptr);
    return download(dy, ydt, {m, w.n});
}

py::list autotune_weight_only(int64_t n, int64_t k, const std::string& dtype, int weight_bits, int64_t group_size,
                              bool pre_quant_scale, bool bias, const std::vector<int64_t>& ms, int reps,
                              const std::optional<std::string>& out_dtype, const std::string& weight_layout) {
    trtllm::kernels::WeightOnlyGemmCuda w;
    w.mma_tiles = trtllm::kernels::weight_only_mma_tiles_from_name(weight_layout);
    w.n = n;
    w.k = k;
    w.weight_bits = weight_bits;
    w.group_size = group_size;
    w.dtype = float_dtype(dtype);
    w.out_dtype = out_dtype ? float_dtype(*out_dtype) : w.dtype;
    // Only whether these are set matters to the tuner (it allocates its own tensors).
    alignas(16) static const char kSet[16] = {};
    w.weight = w.scale = kSet;
    w.pre_quant_scale = pre_quant_scale ? kSet : nullptr;
    w.bias = bias ? kSet : nullptr;
    std::vector<trtllm::kernels::WeightOnlyTuned> tuned;
    {
        py::gil_scoped_release release;
        tuned = trtllm::kernels::autotune_weight_only(w, ms, reps);
    }
    py::list out;
    for (const auto& t : tuned) {
        out.append(py::dict("m"_a = t.m, "path"_a = trtllm::kernels::weight_only_path_name(t.path),
                            "gemv_us"_a = t.gemv_us, "dequant_us"_a = t.dequant_us));
    }
    return out;
}

py::array rms_norm(const py::array& x, const py::array& w, const std::string& dtype, int64_t chunk, float eps,
                   const std::optional<py::array>& out_scale, const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    const int64_t rows = x.shape(0), dim = x.shape(1);
    DeviceBuffer dx = upload(x, esz(dt), "x"), dw = upload(w, esz(dt), "weight");
    DeviceBuffer dy = poisoned(out_bytes(quant, dt, rows * dim));
    trtllm::kernels::rms_norm_cuda(dx.get(), dw.get(), dy.get(), dt, rows, dim, chunk == 0 ? dim : chunk, eps, nullptr,
                                   quant_ptr(quant));
    return download_out(dy, quant, dt, shape_of(x));
}

py::tuple add_rms_norm(const py::array& a, const py::array& b, const py::array& w, const std::string& dtype, float eps,
                       const std::optional<py::array>& out_scale, const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    DeviceBuffer da = upload(a, esz(dt), "a"), dbb = upload(b, esz(dt), "b"), dw = upload(w, esz(dt), "weight");
    DeviceBuffer dn = poisoned(out_bytes(quant, dt, a.size())), ds = poisoned(da.bytes());
    trtllm::kernels::add_rms_norm_cuda(da.get(), dbb.get(), dw.get(), dn.get(), ds.get(), dt, a.shape(0), a.shape(1), eps,
                                       nullptr, quant_ptr(quant));
    return py::make_tuple(download_out(dn, quant, dt, shape_of(a)), download(ds, dt, shape_of(a)));
}

py::array layer_norm(const py::array& x, const py::array& w, const py::array& bias, const std::string& dtype, float eps,
                     const std::optional<py::array>& out_scale, const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    DeviceBuffer dx = upload(x, esz(dt), "x"), dw = upload(w, esz(dt), "weight"), db = upload(bias, esz(dt), "bias");
    DeviceBuffer dy = poisoned(out_bytes(quant, dt, x.size()));
    trtllm::kernels::layer_norm_cuda(dx.get(), dw.get(), db.get(), dy.get(), dt, x.shape(0), x.shape(1), eps, nullptr,
                                     quant_ptr(quant));
    return download_out(dy, quant, dt, shape_of(x));
}

py::tuple add_layer_norm(const py::array& a, const py::array& b, const py::array& w, const py::array& bias,
                         const std::string& dtype, float eps, const std::optional<py::array>& out_scale,
                         const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    DeviceBuffer da = upload(a, esz(dt), "a"), dbb = upload(b, esz(dt), "b"), dw = upload(w, esz(dt), "weight");
    DeviceBuffer dbias = upload(bias, esz(dt), "bias"), dn = poisoned(out_bytes(quant, dt, a.size()));
    DeviceBuffer ds = poisoned(da.bytes());
    trtllm::kernels::add_layer_norm_cuda(da.get(), dbb.get(), dw.get(), dbias.get(), dn.get(), ds.get(), dt, a.shape(0),
                                         a.shape(1), eps, nullptr, quant_ptr(quant));
    return py::make_tuple(download_out(dn, quant, dt, shape_of(a)), download(ds, dt, shape_of(a)));
}

py::array add(const py::array& a, const py::array& b, const std::string& dtype) {
    const DType dt = float_dtype(dtype);
    if (a.size() != b.size()) throw std::invalid_argument("a and b differ in size");
    DeviceBuffer da = upload(a, esz(dt), "a"), dbb = upload(b, esz(dt), "b"), dy = poisoned(da.bytes());
    trtllm::kernels::add_cuda(da.get(), dbb.get(), dy.get(), dt, a.size(), nullptr);
    return download(dy, dt, shape_of(a));
}

py::array silu_mul(const py::array& x, const std::string& dtype, const std::optional<py::array>& out_scale,
                   const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    const int64_t rows = x.shape(0), inter = x.shape(1) / 2;
    DeviceBuffer dx = upload(x, esz(dt), "x"), dy = poisoned(out_bytes(quant, dt, rows * inter));
    trtllm::kernels::silu_mul_cuda(dx.get(), dy.get(), dt, rows, inter, nullptr, quant_ptr(quant));
    return download_out(dy, quant, dt, {rows, inter});
}

// x [rows, cols] (or any shape without out_scale).
py::array gelu_tanh(const py::array& x, const std::string& dtype, const std::optional<py::array>& out_scale,
                    const std::optional<std::string>& out_dtype) {
    const DType dt = float_dtype(dtype);
    const auto quant = device_quant(out_scale, out_dtype);
    DeviceBuffer dx = upload(x, esz(dt), "x"), dy = poisoned(out_bytes(quant, dt, x.size()));
    const int64_t cols = x.ndim() > 0 ? x.shape(x.ndim() - 1) : 1;
    trtllm::kernels::gelu_tanh_cuda(dx.get(), dy.get(), dt, x.size(), nullptr, quant_ptr(quant), cols);
    return download_out(dy, quant, dt, shape_of(x));
}

py::array quantize(const py::array& x, const py::array& scale, const std::string& dtype, const std::string& out_dtype) {
    const DType dt = float_dtype(dtype);
    if (x.ndim() != 2) throw std::invalid_argument("quantize: need x [rows, cols]");
    const auto quant = device_quant(scale, out_dtype);
    DeviceBuffer dx = upload(x, esz(dt), "x"), dy = poisoned(static_cast<size_t>(x.size()));
    trtllm::kernels::quantize_cuda(dx.get(), dt, dy.get(), quant->q, x.shape(0), x.shape(1), nullptr);
    return download_quantized(dy, quant->q.dtype, shape_of(x));
}

// fp8_linear / int8_linear: x [m, k] and weight [n, k] quantized (fp8 as uint8 bits), bias [n] in out_dtype.
py::array quant_linear(DType qdt, const py::array& x, const py::array& w, const trtllm::kernels::GemmScales& scales,
                       const std::optional<py::array>& bias, const std::string& out_dtype,
                       const std::optional<std::string>& algo) {
    const DType ydt = float_dtype(out_dtype);
    if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1)) throw std::invalid_argument("need x [m, k], weight [n, k]");
    const int64_t m = x.shape(0), k = x.shape(1), n = w.shape(0);
    trtllm::kernels::GemmShape shape{n, k, qdt, ydt, bias.has_value()};
    DeviceBuffer dx = upload(x, 1, "x"), dw = upload(w, 1, "weight");
    DeviceBuffer db = bias ? upload(*bias, esz(ydt), "bias (in out_dtype)") : DeviceBuffer();
    DeviceBuffer dy = poisoned(static_cast<size_t>(m * n) * esz(ydt));
    trtllm::kernels::CublasLtGemm g;
    std::optional<trtllm::kernels::GemmTactic> a;
    if (algo) a = trtllm::kernels::gemm_tactic_from_string(*algo);
    g.run(shape, m, dx.get(), dw.get(), bias ? db.get() : nullptr, dy.get(), a ? &*a : nullptr, nullptr, &scales);
    return download(dy, ydt, {m, n});
}

py::array fp8_linear(const py::array& x, const py::array& w, float weight_scale, float input_scale,
                     const std::optional<py::array>& bias, const std::string& out_dtype,
                     const std::optional<std::string>& algo) {
    trtllm::kernels::GemmScales scales;
    scales.alpha = input_scale * weight_scale;
    return quant_linear(DType::kFloat8E4M3, x, w, scales, bias, out_dtype, algo);
}

py::array int8_linear(const py::array& x, const py::array& w, const py::array_t<float, py::array::c_style | py::array::forcecast>& weight_scale,
                      float input_scale, const std::optional<py::array>& bias, const std::string& out_dtype,
                      const std::optional<std::string>& algo) {
    if (w.ndim() != 2 || weight_scale.ndim() != 1 || weight_scale.shape(0) != w.shape(0)) {
        throw std::invalid_argument("int8_linear: need weight [n, k] and weight_scale [n]");
    }
    std::vector<float> alpha(static_cast<size_t>(weight_scale.shape(0)));
    for (size_t i = 0; i < alpha.size(); ++i) alpha[i] = input_scale * weight_scale.data()[i];
    DeviceBuffer d_alpha = upload(py::array_t<float>(alpha.size(), alpha.data()), 4, "alpha");
    trtllm::kernels::GemmScales scales;
    scales.alpha_per_n = d_alpha.as<float>();
    return quant_linear(DType::kInt8, x, w, scales, bias, out_dtype, algo);
}

py::array add_bias(const py::array& x, const py::array& bias, const std::string& dtype) {
    const DType dt = float_dtype(dtype);
    DeviceBuffer dx = upload(x, esz(dt), "x"), db = upload(bias, esz(dt), "bias");
    trtllm::kernels::add_bias_cuda(dx.get(), db.get(), dt, x.shape(0), x.shape(1), nullptr);
    return download(dx, dt, shape_of(x));
}

py::array embedding(const py::array& ids, const py::array& table, const std::string& dtype) {
    const DType dt = float_dtype(dtype);
    DeviceBuffer di = upload(ids, 4, "ids"), dt_ = upload(table, esz(dt), "table");
    const int64_t n = ids.shape(0), hidden = table.shape(1);
    DeviceBuffer dy = poisoned(static_cast<size_t>(n * hidden) * esz(dt));
    trtllm::kernels::embedding_cuda(di.as<int32_t>(), dt_.get(), dy.get(), dt, n, hidden, nullptr);
    return download(dy, dt, {n, hidden});
}

py::array gather_rows(const py::array& x_in, const py::array& rows) {
    const py::array x = contiguous(x_in);
    DeviceBuffer dx = upload(x, static_cast<size_t>(x.itemsize()), "x"), dr = upload(rows, 4, "rows");
    const int64_t row_bytes = x.shape(1) * x.itemsize();
    DeviceBuffer dy = poisoned(static_cast<size_t>(rows.shape(0) * row_bytes));
    trtllm::kernels::gather_rows_cuda(dx.get(), dr.as<int32_t>(), dy.get(), rows.shape(0), row_bytes, nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    py::array out(x.dtype(), std::vector<py::ssize_t>{rows.shape(0), x.shape(1)});
    CHECK_CUDA(cudaMemcpy(out.mutable_data(), dy.get(), static_cast<size_t>(out.nbytes()), cudaMemcpyDeviceToHost));
    return out;
}

py::array concat_shards(const py::array& gathered_in) {
    const py::array gathered = contiguous(gathered_in);
    if (gathered.ndim() != 3) throw std::invalid_argument("gathered must be [tp, rows, shard_cols]");
    const int64_t tp = gathered.shape(0), rows = gathered.shape(1), cols = gathered.shape(2);
    const auto elem = static_cast<size_t>(gathered.itemsize());
    DeviceBuffer dg = upload(gathered, elem, "gathered");
    DeviceBuffer dy = poisoned(static_cast<size_t>(gathered.nbytes()));
    trtllm::kernels::concat_shards_cuda(dg.get(), dy.get(), elem, rows, cols, static_cast<int>(tp), nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    py::array out(gathered.dtype(), std::vector<py::ssize_t>{rows, tp * cols});
    CHECK_CUDA(cudaMemcpy(out.mutable_data(), dy.get(), static_cast<size_t>(out.nbytes()), cudaMemcpyDeviceToHost));
    return out;
}

py::array widen_to_float(const py::array& x, const std::string& dtype) {
    const DType dt = float_dtype(dtype);
    DeviceBuffer dx = upload(x, esz(dt), "x");
    DeviceBuffer dy = poisoned(static_cast<size_t>(x.size()) * sizeof(float));
    trtllm::kernels::widen_to_float_cuda(dx.get(), dt, dy.as<float>(), x.size(), nullptr);
    return download(dy, DType::kFloat32, shape_of(x));
}

py::array narrow_from_float(const py::array& x, const std::string& dtype) {
    const DType dt = float_dtype(dtype);
    DeviceBuffer dx = upload(x, sizeof(float), "x (float32)");
    DeviceBuffer dy = poisoned(static_cast<size_t>(x.size()) * esz(dt));
    trtllm::kernels::narrow_from_float_cuda(dx.as<float>(), dy.get(), dt, x.size(), nullptr);
    return download(dy, dt, shape_of(x));
}

// Same arguments as _core.kernels.attention; kv_layer is updated in place. num_splits: decode key
// ranges per request (0: as the backend picks them).
py::array attention(const py::array& qkv, py::array& kv_layer, const py::array& past_len_in,
                    const py::array& new_len_in, const py::array& block_table_in, const std::string& dtype,
                    int num_heads, int num_kv_heads, int head_dim, const std::optional<py::array>& inv_freq,
                    const std::optional<py::array>& q_norm, const std::optional<py::array>& k_norm, float qk_norm_eps,
                    int num_splits, const std::optional<float>& kv_scale) {
    const DType dt = float_dtype(dtype);
    const py::array past_len = contiguous(past_len_in), new_len = contiguous(new_len_in),
                    block_table = contiguous(block_table_in);
    const int num_requests = static_cast<int>(past_len.shape(0));
    const auto* past = static_cast<const int32_t*>(past_len.data());
    const auto* fresh = static_cast<const int32_t*>(new_len.data());
    std::vector<int32_t> token_start(static_cast<size_t>(num_requests));
    int num_tokens = 0, longest = 1;
    for (int r = 0; r < num_requests; ++r) {
        token_start[static_cast<size_t>(r)] = num_tokens;
        num_tokens += fresh[r];
        longest = std::max(longest, past[r] + fresh[r]);
    }
    if (kv_layer.ndim() != 5 || qkv.ndim() != 2 || qkv.shape(0) != num_tokens) {
        throw std::invalid_argument("need kv_layer [blocks, 2, h_kv, tokens_per_block, d] and qkv [num_tokens, ...]");
    }
    const int tile_tokens = trtllm::kernels::attention_tile_tokens(num_heads, num_kv_heads);
    int num_sms = 0;
    CHECK_CUDA(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
    std::vector<int32_t> decode, tiles;
    trtllm::kernels::plan_attention_work(fresh, num_requests, tile_tokens, decode, tiles);
    if (num_splits <= 0) {
        num_splits = trtllm::kernels::attention_num_splits(static_cast<int>(decode.size()), num_kv_heads, longest, num_sms);
    }

    // FP8 KV cache: kv_layer holds the float8_e4m3fn bits as uint8.
    DeviceBuffer d_qkv = upload(qkv, esz(dt), "qkv"), d_kv = upload(kv_layer, kv_scale ? 1 : esz(dt), "kv_layer");
    DeviceBuffer d_past = upload(past_len, 4, "past_len"), d_new = upload(new_len, 4, "new_len");
    DeviceBuffer d_table = upload(block_table, 4, "block_table");
    DeviceBuffer d_start = upload(py::array_t<int32_t>(token_start.size(), token_start.data()), 4, "token_start");
    DeviceBuffer d_decode = upload(py::array_t<int32_t>(decode.size(), decode.data()), 4, "decode");
    DeviceBuffer d_tiles = upload(py::array_t<int32_t>(tiles.size(), tiles.data()), 4, "tiles");
    DeviceBuffer d_inv = inv_freq ? upload(*inv_freq, 4, "inv_freq") : DeviceBuffer();
    DeviceBuffer d_qn = q_norm ? upload(*q_norm, esz(dt), "q_norm") : DeviceBuffer();
    DeviceBuffer d_kn = k_norm ? upload(*k_norm, esz(dt), "k_norm") : DeviceBuffer();
    DeviceBuffer d_out = poisoned(static_cast<size_t>(num_tokens) * num_heads * head_dim * esz(dt));
    DeviceBuffer d_q = poisoned(sizeof(float) * static_cast<size_t>(num_tokens) * num_heads * head_dim);
    DeviceBuffer d_part = poisoned(sizeof(float) * static_cast<size_t>(trtllm::kernels::attention_partial_floats(
                                                       std::max<int64_t>(1, static_cast<int64_t>(decode.size())) *
                                                           num_splits, num_heads, head_dim)));

    trtllm::kernels::PagedBatchCuda batch;
    batch.num_requests = num_requests;
    batch.past_len = d_past.as<int32_t>();
    batch.new_len = d_new.as<int32_t>();
    batch.token_start = d_start.as<int32_t>();
    batch.block_table = d_table.as<int32_t>();
    batch.max_blocks_per_seq = static_cast<int>(block_table.shape(1));
    batch.tokens_per_block = static_cast<int>(kv_layer.shape(3));
    trtllm::kernels::AttentionParams params;
    params.num_heads = num_heads;
    params.num_kv_heads = num_kv_heads;
    params.head_dim = head_dim;
    params.rope_inv_freq = inv_freq ? d_inv.as<float>() : nullptr;
    params.q_norm = q_norm ? d_qn.get() : nullptr;
    params.k_norm = k_norm ? d_kn.get() : nullptr;
    params.qk_norm_eps = qk_norm_eps;
    float kv_scale_value = kv_scale.value_or(1.0f);
    if (kv_scale) params.kv_scale = &kv_scale_value;  // read on the host
    trtllm::kernels::AttentionWork work;
    work.num_tokens = num_tokens;
    work.num_decode = static_cast<int>(decode.size());
    work.decode_requests = d_decode.as<int32_t>();
    work.decode_identity = trtllm::kernels::is_identity(decode);
    work.num_prefill_tiles = static_cast<int>(tiles.size() / 2);
    work.prefill_tiles = d_tiles.as<int32_t>();
    work.tile_tokens = tile_tokens;
    work.num_splits = num_splits;
    DeviceBuffer d_done(sizeof(int) * std::max<size_t>(1, decode.size()) * static_cast<size_t>(num_kv_heads));
    CHECK_CUDA(cudaMemset(d_done.get(), 0, d_done.bytes()));
    trtllm::kernels::AttentionScratch scratch{d_q.as<float>(), d_part.as<float>(), d_done.as<int>()};
    trtllm::kernels::attention_cuda(d_qkv.get(), d_out.get(), dt, d_kv.get(), batch, params, work, scratch, nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaMemcpy(kv_layer.mutable_data(), d_kv.get(), d_kv.bytes(), cudaMemcpyDeviceToHost));
    // The next launch (the next layer) relies on the decode kernel leaving its counters at zero.
    std::vector<int> done(d_done.bytes() / sizeof(int));
    CHECK_CUDA(cudaMemcpy(done.data(), d_done.get(), d_done.bytes(), cudaMemcpyDeviceToHost));
    if (std::any_of(done.begin(), done.end(), [](int v) { return v != 0; })) {
        throw std::runtime_error("attention: the decode kernel left a split counter non-zero");
    }
    return download(d_out, dt, {num_tokens, static_cast<py::ssize_t>(num_heads) * head_dim});
}

// Benchmark batches of the attention op: their per-request arrays and RoPE frequencies on the
// device, and the PagedBatchCuda / AttentionParams over them (the head shapes as given, RoPE on).
struct BenchAttentionBatch {
    DeviceBuffer past, fresh, start, table, inv;
    trtllm::kernels::PagedBatchCuda batch;
    trtllm::kernels::AttentionParams params;

    BenchAttentionBatch(const std::vector<int32_t>& past_len, const std::vector<int32_t>& new_len,
                        const std::vector<int32_t>& token_start, const std::vector<int32_t>& block_table,
                        int tokens_per_block, int num_heads, int num_kv_heads, int head_dim)
        : past(to_device(past_len)),
          fresh(to_device(new_len)),
          start(to_device(token_start)),
          table(to_device(block_table)),
          inv(to_device(trtllm::kernels::rope_inv_freq(head_dim, trtllm::kernels::RopeParams{}))) {
        batch.num_requests = static_cast<int>(past_len.size());
        batch.past_len = past.as<int32_t>();
        batch.new_len = fresh.as<int32_t>();
        batch.token_start = start.as<int32_t>();
        batch.block_table = table.as<int32_t>();
        batch.max_blocks_per_seq = static_cast<int>(block_table.size() / past_len.size());
        batch.tokens_per_block = tokens_per_block;
        params.num_heads = num_heads;
        params.num_kv_heads = num_kv_heads;
        params.head_dim = head_dim;
        params.rope_inv_freq = inv.as<float>();
    }

    template <class T>
    static DeviceBuffer to_device(const std::vector<T>& v) {
        DeviceBuffer d(sizeof(T) * v.size());
        CHECK_CUDA(cudaMemcpy(d.get(), v.data(), d.bytes(), cudaMemcpyHostToDevice));
        return d;
    }
};

// Mean device time in ms of run(i), i < iters, launched back to back on the null stream.
template <class Run>
double mean_launch_ms(Run&& run, int iters) {
    trtllm::CudaEvent begin, end;
    CHECK_CUDA(cudaEventRecord(begin.get(), nullptr));
    for (int i = 0; i < iters; ++i) run(i);
    CHECK_CUDA(cudaEventRecord(end.get(), nullptr));
    CHECK_CUDA(cudaEventSynchronize(end.get()));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, begin.get(), end.get()));
    return static_cast<double>(ms) / iters;
}

// Mean device time in ms of run(i, stream), i < iters, captured into one CUDA graph and replayed (after
// one warm-up replay): launches with no host time between them, as a decode step's.
template <class Run>
double mean_graph_ms(Run&& run, int iters) {
    trtllm::CudaStream stream;
    const cudaStream_t st = stream.get();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CHECK_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < iters; ++i) run(i, st);
    CHECK_CUDA(cudaStreamEndCapture(st, &graph));
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CHECK_CUDA(err);
    trtllm::CudaEvent begin, end;
    CHECK_CUDA(cudaGraphLaunch(exec, st));
    CHECK_CUDA(cudaEventRecord(begin.get(), st));
    CHECK_CUDA(cudaGraphLaunch(exec, st));
    CHECK_CUDA(cudaEventRecord(end.get(), st));
    CHECK_CUDA(cudaEventSynchronize(end.get()));
    CHECK_CUDA(cudaGraphExecDestroy(exec));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, begin.get(), end.get()));
    return static_cast<double>(ms) / iters;
}

// Mean device time in ms of one attention op (qkv_prep + attend) over a single fresh prefill of
// `num_tokens` tokens (rope on, identity block table), after one warm-up call: for benchmarks.
double attention_prefill_ms(int num_tokens, int num_heads, int num_kv_heads, int head_dim, const std::string& dtype,
                            int tokens_per_block, int iters) {
    const DType dt = float_dtype(dtype);
    if (num_tokens < 2 || tokens_per_block < 1 || iters < 1) {
        throw std::invalid_argument("need num_tokens >= 2 (a prefill), tokens_per_block >= 1, iters >= 1");
    }
    const int num_blocks = (num_tokens + tokens_per_block - 1) / tokens_per_block;
    std::vector<int32_t> table(static_cast<size_t>(num_blocks));
    for (int i = 0; i < num_blocks; ++i) table[static_cast<size_t>(i)] = i;
    const BenchAttentionBatch in({0}, {num_tokens}, {0}, table, tokens_per_block, num_heads, num_kv_heads, head_dim);
    const int tile_tokens = trtllm::kernels::attention_tile_tokens(num_heads, num_kv_heads);
    std::vector<int32_t> decode, tiles;
    trtllm::kernels::plan_attention_work(&num_tokens, 1, tile_tokens, decode, tiles);
    const DeviceBuffer d_tiles = BenchAttentionBatch::to_device(tiles);
    const size_t qkv_elems = static_cast<size_t>(num_tokens) * (num_heads + 2 * num_kv_heads) * head_dim;
    DeviceBuffer d_qkv(qkv_elems * esz(dt));
    CHECK_CUDA(cudaMemset(d_qkv.get(), 0x3c, d_qkv.bytes()));  // small finite values in every float dtype
    DeviceBuffer d_kv(static_cast<size_t>(trtllm::kernels::kv_block_bytes(num_kv_heads, tokens_per_block, head_dim, dt)) *
                      num_blocks);
    DeviceBuffer d_out(static_cast<size_t>(num_tokens) * num_heads * head_dim * esz(dt));
    DeviceBuffer d_q(sizeof(float) * static_cast<size_t>(num_tokens) * num_heads * head_dim);
    trtllm::kernels::AttentionWork work;
    work.num_tokens = num_tokens;
    work.num_prefill_tiles = static_cast<int>(tiles.size() / 2);
    work.prefill_tiles = d_tiles.as<int32_t>();
    work.tile_tokens = tile_tokens;
    trtllm::kernels::AttentionScratch scratch{d_q.as<float>(), nullptr};
    auto run = [&](int) {
        trtllm::kernels::attention_cuda(d_qkv.get(), d_out.get(), dt, d_kv.get(), in.batch, in.params, work, scratch,
                                        nullptr);
    };
    py::gil_scoped_release release;
    run(0);
    return mean_launch_ms(run, iters);
}

// Mean device time in us of one decode attention launch (a batch of decode tokens only, as in a
// pure decode step: the decode kernel preps q and writes the new key itself): `batch` requests of
// `context` cached keys each (the new token at position context), head shapes as given, RoPE on,
// in-order block tables. num_splits 0: the planner's choice for sequences up to plan_len (an engine
// plans for its max_seq_len, since a graph replays with any length). The launches cycle over
// `copies` caches: enough copies that together they exceed the L2 give the cold-cache time a model
// sees, whose GEMMs stream the L2 full between two layers' attention (qkv stays one row set: in a
// model it was just written by the qkv GEMM). The timed launches replay as one CUDA graph.
double attention_decode_us(int batch, int context, int num_heads, int num_kv_heads, int head_dim,
                           const std::string& dtype, int tokens_per_block, int num_splits, int plan_len, int copies,
                           int iters) {
    const DType dt = float_dtype(dtype);
    if (batch < 1 || context < 0 || tokens_per_block < 1 || copies < 1 || iters < 1 || plan_len < context + 1) {
        throw std::invalid_argument("need batch >= 1, context >= 0, tokens_per_block >= 1, copies >= 1, iters >= 1 "
                                    "and plan_len > context");
    }
    int num_sms = 0;
    CHECK_CUDA(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
    if (num_splits <= 0) num_splits = trtllm::kernels::attention_num_splits(batch, num_kv_heads, plan_len, num_sms);
    const int blocks_per_seq = (context + 1 + tokens_per_block - 1) / tokens_per_block;
    std::vector<int32_t> past(batch, context), fresh(batch, 1), start(batch), table(size_t(batch) * blocks_per_seq),
        decode(batch);
    for (int r = 0; r < batch; ++r) {
        start[r] = decode[r] = r;
        for (int b = 0; b < blocks_per_seq; ++b) table[size_t(r) * blocks_per_seq + b] = r * blocks_per_seq + b;
    }
    const BenchAttentionBatch in(past, fresh, start, table, tokens_per_block, num_heads, num_kv_heads, head_dim);
    const DeviceBuffer d_decode = BenchAttentionBatch::to_device(decode);
    const size_t qkv_bytes = size_t(batch) * (num_heads + 2 * num_kv_heads) * head_dim * esz(dt);
    const size_t kv_bytes = size_t(trtllm::kernels::kv_block_bytes(num_kv_heads, tokens_per_block, head_dim, dt)) *
                            size_t(batch) * blocks_per_seq;
    DeviceBuffer d_qkv(qkv_bytes), d_kv(kv_bytes * copies);
    CHECK_CUDA(cudaMemset(d_qkv.get(), 0x3c, d_qkv.bytes()));  // small finite values in every float dtype
    CHECK_CUDA(cudaMemset(d_kv.get(), 0x3c, d_kv.bytes()));
    DeviceBuffer d_out(size_t(batch) * num_heads * head_dim * esz(dt));
    DeviceBuffer d_part(sizeof(float) * size_t(trtllm::kernels::attention_partial_floats(int64_t{batch} * num_splits,
                                                                                          num_heads, head_dim)));
    DeviceBuffer d_done(sizeof(int) * size_t(batch) * num_kv_heads);
    CHECK_CUDA(cudaMemset(d_done.get(), 0, d_done.bytes()));
    trtllm::kernels::AttentionWork work;
    work.num_tokens = batch;
    work.num_decode = batch;
    work.decode_requests = d_decode.as<int32_t>();
    work.decode_identity = true;
    work.num_splits = num_splits;
    trtllm::kernels::AttentionScratch scratch{nullptr, d_part.as<float>(), d_done.as<int>()};
    auto run = [&](int i, cudaStream_t stream) {
        const size_t c = size_t(i % copies);
        trtllm::kernels::attention_cuda(d_qkv.get(), d_out.get(), dt, static_cast<char*>(d_kv.get()) + c * kv_bytes,
                                        in.batch, in.params, work, scratch, stream);
    };
    py::gil_scoped_release release;
    for (int i = 0; i < copies; ++i) run(i, nullptr);  // warm-up: every copy once
    CHECK_CUDA(cudaDeviceSynchronize());
    return 1e3 * mean_graph_ms(run, iters);
}

// The device sampler over rows of float32 logits, one RowSampling per row from the per-row arrays;
// returns (tokens int32, logprobs float32).
py::tuple sample_rows(const py::array_t<float, py::array::c_style | py::array::forcecast>& logits, int vocab_size,
                      const std::vector<float>& temperature, const std::vector<int32_t>& top_k,
                      const std::vector<float>& top_p, const std::vector<float>& min_p,
                      const std::vector<double>& uniform, bool want_logprob) {
    const auto rows = static_cast<size_t>(logits.shape(0));
    if (logits.ndim() != 2 || vocab_size < 1 || vocab_size > logits.shape(1)) {
        throw std::invalid_argument("need logits [rows, vocab_padded] and 1 <= vocab_size <= vocab_padded");
    }
    if (temperature.size() != rows || top_k.size() != rows || top_p.size() != rows || min_p.size() != rows ||
        uniform.size() != rows) {
        throw std::invalid_argument("need one temperature, top_k, top_p, min_p and uniform per row");
    }
    std::vector<trtllm::kernels::RowSampling> params(rows);
    for (size_t r = 0; r < rows; ++r) {
        params[r] = {temperature[r], top_k[r], top_p[r], min_p[r], uniform[r], want_logprob ? 1 : 0};
    }
    DeviceBuffer d = upload(logits, 4, "logits");
    DeviceBuffer d_params(sizeof(trtllm::kernels::RowSampling) * rows);
    CHECK_CUDA(cudaMemcpy(d_params.get(), params.data(), d_params.bytes(), cudaMemcpyHostToDevice));
    DeviceBuffer d_out = poisoned(sizeof(trtllm::kernels::RowSample) * rows);
    trtllm::kernels::sample_rows_cuda(d.as<float>(), logits.shape(0), logits.shape(1), vocab_size,
                                      d_params.as<trtllm::kernels::RowSampling>(),
                                      d_out.as<trtllm::kernels::RowSample>(), nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<trtllm::kernels::RowSample> out(rows);
    CHECK_CUDA(cudaMemcpy(out.data(), d_out.get(), d_out.bytes(), cudaMemcpyDeviceToHost));
    py::array_t<int32_t> tokens(logits.shape(0));
    py::array_t<float> logprobs(logits.shape(0));
    for (size_t r = 0; r < rows; ++r) {
        tokens.mutable_data()[r] = out[r].token;
        logprobs.mutable_data()[r] = out[r].logprob;
    }
    return py::make_tuple(tokens, logprobs);
}

py::list autotune_gemm(int64_t n, int64_t k, const std::string& dtype, const std::string& out_dtype, bool has_bias,
                       const std::vector<int64_t>& ms, int max_algos, int reps) {
    trtllm::kernels::GemmShape shape{n, k, gemm_input_dtype(dtype), float_dtype(out_dtype), has_bias};
    std::vector<trtllm::kernels::CublasLtGemm::Tuned> tuned;
    {
        py::gil_scoped_release release;
        trtllm::kernels::CublasLtGemm g;
        tuned = g.autotune(shape, ms, max_algos, reps);
    }
    py::list out;
    for (const auto& t : tuned) {
        out.append(py::dict("m"_a = t.m, "algo"_a = trtllm::kernels::gemm_tactic_to_string(t.tactic), "best_us"_a = t.best_us,
                            "default_us"_a = t.default_us, "candidates"_a = t.candidates));
    }
    return out;
}

}  // namespace

void bind_cuda_kernels(py::module_& m) {
    py::module_ k = m.def_submodule("cuda_kernels", "CUDA kernels of plugins/ over numpy arrays, for tests "
                                                    "(same conventions as _core.kernels).");
    k.def("gemm", &gemm, "x"_a, "weight"_a, "bias"_a = py::none(), py::kw_only(), "dtype"_a, "out_dtype"_a = py::none(),
          "algo"_a = py::none(),
          "x[m, k] @ weight[n, k].T + bias (bias in out_dtype); algo: a tactic ('gemv' or cuBLASLt's in hex)");
    k.def("rms_norm", &rms_norm, "x"_a, "weight"_a, "dtype"_a, "chunk"_a = 0, "eps"_a = 1e-6f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("add_rms_norm", &add_rms_norm, "a"_a, "b"_a, "weight"_a, "dtype"_a, "eps"_a = 1e-6f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("layer_norm", &layer_norm, "x"_a, "weight"_a, "bias"_a, "dtype"_a, "eps"_a = 1e-5f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("add_layer_norm", &add_layer_norm, "a"_a, "b"_a, "weight"_a, "bias"_a, "dtype"_a, "eps"_a = 1e-5f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("add", &add, "a"_a, "b"_a, "dtype"_a);
    k.def("silu_mul", &silu_mul, "x"_a, "dtype"_a, "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("gelu_tanh", &gelu_tanh, "x"_a, "dtype"_a, "out_scale"_a = py::none(), "out_dtype"_a = py::none());
    k.def("quantize", &quantize, "x"_a, "scale"_a, py::kw_only(), "dtype"_a, "out_dtype"_a,
          "x [rows, cols] -> quantized (uint8 fp8 bits or int8) with float32 scale [1] or [cols]");
    k.def("fp8_linear", &fp8_linear, "x"_a, "weight"_a, "weight_scale"_a, "input_scale"_a, "bias"_a = py::none(),
          py::kw_only(), "out_dtype"_a = "float32", "algo"_a = py::none(),
          "x fp8 bits [m, k] @ weight fp8 bits [n, k].T * (input_scale * weight_scale) + bias (bias in out_dtype)");
    k.def("int8_linear", &int8_linear, "x"_a, "weight"_a, "weight_scale"_a, "input_scale"_a, "bias"_a = py::none(),
          py::kw_only(), "out_dtype"_a = "float32", "algo"_a = py::none(),
          "float(x int8 [m, k] @ weight int8 [n, k].T) * (input_scale * weight_scale[n]) + bias (bias in out_dtype)");
    k.def("add_bias", &add_bias, "x"_a, "bias"_a, "dtype"_a);
    k.def("embedding", &embedding, "ids"_a, "table"_a, "dtype"_a);
    k.def("gather_rows", &gather_rows, "x"_a, "rows"_a);
    k.def("attention", &attention, "qkv"_a, "kv_layer"_a, "past_len"_a, "new_len"_a, "block_table"_a, py::kw_only(),
          "dtype"_a, "num_heads"_a, "num_kv_heads"_a, "head_dim"_a, "inv_freq"_a = py::none(), "q_norm"_a = py::none(),
          "k_norm"_a = py::none(), "qk_norm_eps"_a = 1e-6f, "num_splits"_a = 0, "kv_scale"_a = py::none(),
          "kv_scale: FP8 KV cache (kv_layer uint8 float8_e4m3fn bits) with this per-layer scale");
    k.def("attention_prefill_ms", &attention_prefill_ms, "num_tokens"_a, "num_heads"_a, "num_kv_heads"_a, "head_dim"_a,
          "dtype"_a = "bfloat16", "tokens_per_block"_a = 32, "iters"_a = 20,
          "Mean ms of one attention op over a fresh prefill of num_tokens tokens (benchmark).");
    k.def("attention_decode_us", &attention_decode_us, "batch"_a, "context"_a, "num_heads"_a, "num_kv_heads"_a,
          "head_dim"_a, "dtype"_a = "bfloat16", "tokens_per_block"_a = 32, "num_splits"_a = 0, "plan_len"_a = 4096,
          "copies"_a = 1, "iters"_a = 200,
          "Mean us of one decode attention launch, batch x context keys, over `copies` caches (benchmark).");
    k.def("sample_rows", &sample_rows, "logits"_a, "vocab_size"_a, py::kw_only(), "temperature"_a, "top_k"_a,
          "top_p"_a, "min_p"_a, "uniform"_a, "want_logprob"_a = false,
          "Device sampling of each row among its first vocab_size logits (sampling_cuda.h); returns "
          "(tokens, logprobs); tokens -1: no finite logit, -2: +inf logit with temperature > 0.");
    k.def("concat_shards", &concat_shards, "gathered"_a);
    k.def("widen_to_float", &widen_to_float, "x"_a, "dtype"_a, "x (dtype) -> float32, exact");
    k.def("narrow_from_float", &narrow_from_float, "x"_a, "dtype"_a, "x (float32) -> dtype, rounded to nearest even");
    k.def("weight_only_linear", &weight_only_linear, "x"_a, "weight"_a, "weight_scale"_a, py::kw_only(), "dtype"_a,
          "weight_bits"_a, "group_size"_a, "pre_quant_scale"_a = py::none(), "bias"_a = py::none(), "path"_a = py::none(),
          "out_dtype"_a = py::none(), "weight_layout"_a = trtllm::kernels::kCudaWeightLayout,
          "W8A16 / W4A16: x [m, k] (activation dtype) with weight uint8 in the CUDA layout weight_layout "
          "(cuda_k_interleaved_v1 or cuda_mma_tiles_v1), weight_scale [n, k / group_size], "
          "pre_quant_scale [k], bias [n] in the activation dtype; path 'gemv' or 'dequant_gemm' (None: the default "
          "for m); out_dtype: y's dtype, None (dtype) or 'float32'");
    m.def("cuda_autotune_weight_only", &autotune_weight_only, "n"_a, "k"_a, "dtype"_a, "weight_bits"_a, "group_size"_a,
          "pre_quant_scale"_a, "bias"_a, "ms"_a, "reps"_a = 20, "out_dtype"_a = py::none(),
          "weight_layout"_a = trtllm::kernels::kCudaWeightLayout,
          "Times the weight-only GEMV and dequantize + cuBLASLt paths at each m on GPU 0 (synthetic weights); returns "
          "per m {m, path (the faster), gemv_us (0 past the GEMV's rows), dequant_us}.");
    m.def("cuda_autotune_gemm", &autotune_gemm, "n"_a, "k"_a, "dtype"_a, "out_dtype"_a, "has_bias"_a, "ms"_a,
          "max_algos"_a = 16, "reps"_a = 20,
          "Times cuBLASLt's candidate algorithms for y[m, n] = x[m, k] w[n, k]^T at each m on GPU 0; returns per m "
          "the fastest as {m, algo (hex or 'gemv'), best_us, default_us, candidates}. dtype float8_e4m3fn / int8: "
          "the quantized GEMM of fp8_linear / int8_linear (n, k multiples of 16).");
    m.def("cublaslt_version", &trtllm::kernels::CublasLtGemm::version);
}
