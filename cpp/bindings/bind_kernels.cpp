// _core.kernels: the CPU kernels of plugins/ over numpy arrays, for tests only (the executor
// calls the kernels directly). Activations of dtype "bfloat16" / "float16" travel as 2-byte
// arrays (uint16 bit patterns, numpy float16 or ml_dtypes bfloat16); outputs come back as uint16
// bit patterns for those dtypes, float32 arrays otherwise. Bad arguments raise ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "collective/collective.h"
#include "cpu_common.h"
#include "elementwise/elementwise.h"
#include "embedding/embedding.h"
#include "gemm/gemm.h"
#include "gemm/quant_gemm.h"
#include "norm/norm.h"
#include "quantization/quantize.h"
#include "trtllm/dtype.h"

namespace py = pybind11;

namespace {

using trtllm::DType;

DType activation_dtype(const std::string& name) {
    if (name == "float32") return DType::kFloat32;
    if (name == "bfloat16") return DType::kBFloat16;
    if (name == "float16") return DType::kFloat16;
    throw std::invalid_argument("dtype must be 'float32', 'bfloat16' or 'float16', got '" + name + "'");
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + ")";
}

// The array's data if it is C-contiguous and holds `dt` elements; `name` goes in the error.
void check_elements(const py::array& a, DType dt, const char* name) {
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
    const std::string kind = py::str(a.dtype());
    bool ok = false;
    if (dt == DType::kFloat32) ok = kind == "float32";
    if (dt == DType::kInt32) ok = kind == "int32";
    if (dt == DType::kBFloat16 || dt == DType::kFloat16) ok = kind == "uint16" || kind == trtllm::dtype_name(dt);
    if (!ok) {
        throw std::invalid_argument(std::string(name) + " has numpy dtype " + kind + ", expected " +
                                    (dt == DType::kFloat32 || dt == DType::kInt32
                                         ? std::string(trtllm::dtype_name(dt))
                                         : std::string("uint16 bits or ") + trtllm::dtype_name(dt)));
    }
}

// Quantized arrays travel as raw bytes: float8_e4m3fn as uint8 bit patterns (or ml_dtypes arrays), int8 as int8.
DType quantized_dtype(const std::string& name) {
    if (name == "float8_e4m3fn") return DType::kFloat8E4M3;
    if (name == "int8") return DType::kInt8;
    throw std::invalid_argument("quantized dtype must be 'float8_e4m3fn' or 'int8', got '" + name + "'");
}

const void* quantized_data(const py::array& a, DType dt, const char* name) {
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
    const std::string kind = py::str(a.dtype());
    const bool ok = dt == DType::kInt8 ? kind == "int8" : (kind == "uint8" || kind == "float8_e4m3fn");
    if (!ok) throw std::invalid_argument(std::string(name) + " has numpy dtype " + kind + ", expected " + trtllm::dtype_name(dt));
    return a.data();
}

py::array new_quantized(DType dt, const std::vector<py::ssize_t>& shape) {
    if (dt == DType::kInt8) return py::array_t<int8_t>(shape);
    return py::array_t<uint8_t>(shape);
}

// float32 scales [1] or [cols] -> OutputQuant, or nothing when out_dtype is unset.
std::optional<trtllm::kernels::OutputQuant> output_quant(const std::optional<py::array>& scale,
                                                         const std::optional<std::string>& out_dtype) {
    if (scale.has_value() != out_dtype.has_value()) throw std::invalid_argument("pass out_scale and out_dtype together");
    if (!scale) return std::nullopt;
    py::array s = py::array::ensure(*scale, py::array::c_style);
    const auto* p = static_cast<const float*>(s.data());
    if (std::string(py::str(s.dtype())) != "float32") throw std::invalid_argument("out_scale must be float32");
    return trtllm::kernels::make_output_quant(quantized_dtype(*out_dtype), p, static_cast<int64_t>(s.size()));
}

void check_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const char* name) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
    if (!ok) {
        std::string want = "(";
        for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
        throw std::invalid_argument(std::string(name) + " has shape " + shape_str(a) + ", expected " + want + ")");
    }
}

const void* data_of(const py::array& a, DType dt, const char* name) {
    check_elements(a, dt, name);
    return a.data();
}

void* mutable_data_of(py::array& a, DType dt, const char* name) {
    check_elements(a, dt, name);
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
    return a.mutable_data();
}

void check_2d(const py::array& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D, got shape " + shape_str(a));
}

py::array new_array(DType dt, const std::vector<py::ssize_t>& shape) {
    if (dt == DType::kFloat32) return py::array_t<float>(shape);
    return py::array_t<uint16_t>(shape);
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

trtllm::kernels::RopeScaling rope_scaling(const std::string& name) {
    if (name == "none") return trtllm::kernels::RopeScaling::kNone;
    if (name == "linear") return trtllm::kernels::RopeScaling::kLinear;
    if (name == "llama3") return trtllm::kernels::RopeScaling::kLlama3;
    throw std::invalid_argument("rope scaling must be 'none', 'linear' or 'llama3', got '" + name + "'");
}

// float32 -> bits of `dt` (impl "row": the kernels' vectorized converters; "scalar": dtype.h).
py::array from_float(const py::array& x, const std::string& dtype, const std::string& impl) {
    const DType dt = activation_dtype(dtype);
    const auto* src = static_cast<const float*>(data_of(x, DType::kFloat32, "x"));
    py::array y = new_array(dt, shape_of(x));
    const auto n = static_cast<int64_t>(x.size());
    if (impl == "row") {
        trtllm::kernels::cpu::store_row(src, dt, n, y.mutable_data());
    } else if (impl == "scalar") {
        for (int64_t i = 0; i < n; ++i) trtllm::store_float(y.mutable_data(), dt, i, src[i]);
    } else {
        throw std::invalid_argument("impl must be 'row' or 'scalar', got '" + impl + "'");
    }
    return y;
}

py::array to_float(const py::array& x, const std::string& dtype, const std::string& impl) {
    const DType dt = activation_dtype(dtype);
    const void* src = data_of(x, dt, "x");
    py::array_t<float> y(shape_of(x));
    const auto n = static_cast<int64_t>(x.size());
    if (impl == "row") {
        trtllm::kernels::cpu::load_row(src, dt, n, y.mutable_data());
    } else if (impl == "scalar") {
        for (int64_t i = 0; i < n; ++i) y.mutable_data()[i] = trtllm::load_float(src, dt, i);
    } else {
        throw std::invalid_argument("impl must be 'row' or 'scalar', got '" + impl + "'");
    }
    return y;
}

py::array gemm(const py::array& x, const py::array& weight, const std::optional<py::array>& bias,
               const std::string& dtype, const std::optional<std::string>& weight_dtype,
               const std::optional<std::string>& out_dtype) {
    const DType xdt = activation_dtype(dtype);
    const DType wdt = activation_dtype(weight_dtype.value_or(dtype));
    const DType ydt = activation_dtype(out_dtype.value_or(dtype));
    check_2d(x, "x");
    check_2d(weight, "weight");
    const py::ssize_t m = x.shape(0), k = x.shape(1), n = weight.shape(0);
    check_shape(weight, {n, k}, "weight");
    const void* bias_ptr = nullptr;
    if (bias) {
        check_shape(*bias, {n}, "bias");
        bias_ptr = data_of(*bias, wdt, "bias");
    }
    const void* xp = data_of(x, xdt, "x");
    const void* wp = data_of(weight, wdt, "weight");
    py::array y = new_array(ydt, {m, n});
    void* yp = y.mutable_data();
    py::gil_scoped_release release;
    const auto w = trtllm::kernels::prepare_gemm_weight_cpu(wp, wdt, n, k, bias_ptr);
    trtllm::kernels::gemm_cpu(xp, xdt, w, yp, ydt, m);
    return y;
}

// A prepared weight for tests: the kernel reads the weight in place, so keep its array alive.
struct PreparedGemm {
    py::array weight;
    trtllm::kernels::GemmWeightCpu w;
};

PreparedGemm prepare_gemm_weight(const py::array& weight, const std::optional<py::array>& bias,
                                 const std::string& weight_dtype) {
    const DType wdt = activation_dtype(weight_dtype);
    check_2d(weight, "weight");
    const py::ssize_t n = weight.shape(0), k = weight.shape(1);
    const void* bias_ptr = nullptr;
    if (bias) {
        check_shape(*bias, {n}, "bias");
        bias_ptr = data_of(*bias, wdt, "bias");
    }
    py::array owned = py::array::ensure(weight, py::array::c_style);
    const void* wp = data_of(owned, wdt, "weight");
    return PreparedGemm{owned, trtllm::kernels::prepare_gemm_weight_cpu(wp, wdt, n, k, bias_ptr)};
}

py::array gemm_prepared(const py::array& x, const PreparedGemm& prepared, const std::string& dtype,
                        const std::optional<std::string>& out_dtype) {
    const trtllm::kernels::GemmWeightCpu& w = prepared.w;
    const DType xdt = activation_dtype(dtype);
    const DType ydt = activation_dtype(out_dtype.value_or(dtype));
    check_2d(x, "x");
    check_shape(x, {x.shape(0), static_cast<py::ssize_t>(w.k)}, "x");
    const void* xp = data_of(x, xdt, "x");
    py::array y = new_array(ydt, {x.shape(0), static_cast<py::ssize_t>(w.n)});
    void* yp = y.mutable_data();
    const int64_t m = x.shape(0);
    py::gil_scoped_release release;
    trtllm::kernels::gemm_cpu(xp, xdt, w, yp, ydt, m);
    return y;
}

py::array rms_norm(const py::array& x, const py::array& weight, const std::string& dtype, int64_t chunk, float eps,
                   const std::optional<py::array>& out_scale, const std::optional<std::string>& out_dtype) {
    const auto quant = output_quant(out_scale, out_dtype);
    const DType dt = activation_dtype(dtype);
    check_2d(x, "x");
    const int64_t rows = x.shape(0), dim = x.shape(1);
    if (chunk == 0) chunk = dim;
    if (chunk <= 0 || dim % chunk != 0) {
        throw std::invalid_argument("chunk " + std::to_string(chunk) + " must divide dim " + std::to_string(dim));
    }
    check_shape(weight, {static_cast<py::ssize_t>(chunk)}, "weight");
    const void* xp = data_of(x, dt, "x");
    const void* wp = data_of(weight, dt, "weight");
    py::array y = quant ? new_quantized(quant->dtype, shape_of(x)) : new_array(dt, shape_of(x));
    void* yp = y.mutable_data();
    py::gil_scoped_release release;
    trtllm::kernels::rms_norm_cpu(xp, wp, yp, dt, rows, dim, chunk, eps, quant ? &*quant : nullptr);
    return y;
}

py::tuple add_rms_norm(const py::array& a, const py::array& b, const py::array& weight, const std::string& dtype,
                       float eps, const std::optional<py::array>& out_scale, const std::optional<std::string>& out_dtype) {
    const auto quant = output_quant(out_scale, out_dtype);
    const DType dt = activation_dtype(dtype);
    check_2d(a, "a");
    check_shape(b, shape_of(a), "b");
    const int64_t rows = a.shape(0), dim = a.shape(1);
    check_shape(weight, {a.shape(1)}, "weight");
    const void* ap = data_of(a, dt, "a");
    const void* bp = data_of(b, dt, "b");
    const void* wp = data_of(weight, dt, "weight");
    py::array normed = quant ? new_quantized(quant->dtype, shape_of(a)) : new_array(dt, shape_of(a));
    py::array sum = new_array(dt, shape_of(a));
    void* np_ = normed.mutable_data();
    void* sp = sum.mutable_data();
    {
        py::gil_scoped_release release;
        trtllm::kernels::add_rms_norm_cpu(ap, bp, wp, np_, sp, dt, rows, dim, eps, quant ? &*quant : nullptr);
    }
    return py::make_tuple(normed, sum);
}

py::array layer_norm(const py::array& x, const py::array& weight, const py::array& bias, const std::string& dtype,
                     float eps) {
    const DType dt = activation_dtype(dtype);
    check_2d(x, "x");
    check_shape(weight, {x.shape(1)}, "weight");
    check_shape(bias, {x.shape(1)}, "bias");
    const void* xp = data_of(x, dt, "x");
    const void* wp = data_of(weight, dt, "weight");
    const void* bp = data_of(bias, dt, "bias");
    py::array y = new_array(dt, shape_of(x));
    void* yp = y.mutable_data();
    const int64_t rows = x.shape(0), dim = x.shape(1);
    py::gil_scoped_release release;
    trtllm::kernels::layer_norm_cpu(xp, wp, bp, yp, dt, rows, dim, eps);
    return y;
}

py::tuple add_layer_norm(const py::array& a, const py::array& b, const py::array& weight, const py::array& bias,
                         const std::string& dtype, float eps) {
    const DType dt = activation_dtype(dtype);
    check_2d(a, "a");
    check_shape(b, shape_of(a), "b");
    check_shape(weight, {a.shape(1)}, "weight");
    check_shape(bias, {a.shape(1)}, "bias");
    const void* ap = data_of(a, dt, "a");
    const void* bp = data_of(b, dt, "b");
    const void* wp = data_of(weight, dt, "weight");
    const void* biasp = data_of(bias, dt, "bias");
    py::array normed = new_array(dt, shape_of(a)), sum = new_array(dt, shape_of(a));
    void* np_ = normed.mutable_data();
    void* sp = sum.mutable_data();
    const int64_t rows = a.shape(0), dim = a.shape(1);
    {
        py::gil_scoped_release release;
        trtllm::kernels::add_layer_norm_cpu(ap, bp, wp, biasp, np_, sp, dt, rows, dim, eps);
    }
    return py::make_tuple(normed, sum);
}

py::array add(const py::array& a, const py::array& b, const std::string& dtype) {
    const DType dt = activation_dtype(dtype);
    check_shape(b, shape_of(a), "b");
    const void* ap = data_of(a, dt, "a");
    const void* bp = data_of(b, dt, "b");
    py::array y = new_array(dt, shape_of(a));
    void* yp = y.mutable_data();
    const auto n = static_cast<int64_t>(a.size());
    py::gil_scoped_release release;
    trtllm::kernels::add_cpu(ap, bp, yp, dt, n);
    return y;
}

py::array silu_mul(const py::array& x, const std::string& dtype, const std::optional<py::array>& out_scale,
                   const std::optional<std::string>& out_dtype) {
    const auto quant = output_quant(out_scale, out_dtype);
    const DType dt = activation_dtype(dtype);
    check_2d(x, "x");
    if (x.shape(1) % 2 != 0) throw std::invalid_argument("x must have an even last dim, got " + shape_str(x));
    const void* xp = data_of(x, dt, "x");
    const int64_t rows = x.shape(0), inter = x.shape(1) / 2;
    py::array y = quant ? new_quantized(quant->dtype, {x.shape(0), x.shape(1) / 2}) : new_array(dt, {x.shape(0), x.shape(1) / 2});
    void* yp = y.mutable_data();
    py::gil_scoped_release release;
    trtllm::kernels::silu_mul_cpu(xp, yp, dt, rows, inter, quant ? &*quant : nullptr);
    return y;
}

py::array gelu_tanh(const py::array& x, const std::string& dtype) {
    const DType dt = activation_dtype(dtype);
    const void* xp = data_of(x, dt, "x");
    py::array y = new_array(dt, shape_of(x));
    void* yp = y.mutable_data();
    const auto n = static_cast<int64_t>(x.size());
    py::gil_scoped_release release;
    trtllm::kernels::gelu_tanh_cpu(xp, yp, dt, n);
    return y;
}

// Returns x + bias as a new array (the kernel works in place on a copy).
py::array add_bias(const py::array& x, const py::array& bias, const std::string& dtype) {
    const DType dt = activation_dtype(dtype);
    check_2d(x, "x");
    check_shape(bias, {x.shape(1)}, "bias");
    const void* xp = data_of(x, dt, "x");
    const void* bp = data_of(bias, dt, "bias");
    py::array y = new_array(dt, shape_of(x));
    std::memcpy(y.mutable_data(), xp, static_cast<size_t>(x.nbytes()));
    void* yp = y.mutable_data();
    const int64_t rows = x.shape(0), n = x.shape(1);
    py::gil_scoped_release release;
    trtllm::kernels::add_bias_cpu(yp, bp, dt, rows, n);
    return y;
}

void check_indices(const py::array& idx, int64_t bound, const char* name) {
    const auto* p = static_cast<const int32_t*>(data_of(idx, DType::kInt32, name));
    for (py::ssize_t i = 0; i < idx.size(); ++i) {
        if (p[i] < 0 || p[i] >= bound) {
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(p[i]) +
                                        " is outside [0, " + std::to_string(bound) + ")");
        }
    }
}

py::array embedding(const py::array& ids, const py::array& table, const std::string& dtype) {
    const DType dt = activation_dtype(dtype);
    check_2d(table, "table");
    if (ids.ndim() != 1) throw std::invalid_argument("ids must be 1-D, got shape " + shape_str(ids));
    check_indices(ids, table.shape(0), "ids");
    const void* tp = data_of(table, dt, "table");
    const auto* ip = static_cast<const int32_t*>(ids.data());
    py::array y = new_array(dt, {ids.shape(0), table.shape(1)});
    void* yp = y.mutable_data();
    const int64_t num_tokens = ids.shape(0), hidden = table.shape(1);
    py::gil_scoped_release release;
    trtllm::kernels::embedding_cpu(ip, tp, yp, dt, num_tokens, hidden);
    return y;
}

// Rows of any 2-D C-contiguous array, any dtype.
py::array gather_rows(const py::array& x, const py::array& rows) {
    check_2d(x, "x");
    if (!(x.flags() & py::array::c_style)) throw std::invalid_argument("x must be C-contiguous");
    if (rows.ndim() != 1) throw std::invalid_argument("rows must be 1-D, got shape " + shape_str(rows));
    check_indices(rows, x.shape(0), "rows");
    py::array y(x.dtype(), std::vector<py::ssize_t>{rows.shape(0), x.shape(1)});
    const int64_t row_bytes = x.shape(1) * x.itemsize();
    trtllm::kernels::gather_rows_cpu(x.data(), static_cast<const int32_t*>(rows.data()), y.mutable_data(),
                                     rows.shape(0), row_bytes);
    return y;
}

// gathered [tp, rows, shard_cols] of any dtype -> [rows, tp * shard_cols].
py::array concat_shards(const py::array& gathered) {
    if (gathered.ndim() != 3 || !(gathered.flags() & py::array::c_style)) {
        throw std::invalid_argument("gathered must be a C-contiguous [tp, rows, shard_cols] array, got shape " +
                                    shape_str(gathered));
    }
    const int64_t tp = gathered.shape(0), rows = gathered.shape(1), cols = gathered.shape(2);
    py::array y(gathered.dtype(), std::vector<py::ssize_t>{rows, tp * cols});
    trtllm::kernels::concat_shards_cpu(gathered.data(), y.mutable_data(), static_cast<size_t>(gathered.itemsize()),
                                       rows, cols, static_cast<int>(tp));
    return y;
}

py::array quantize(const py::array& x, const py::array& scale, const std::string& dtype, const std::string& out_dtype) {
    const DType dt = activation_dtype(dtype);
    check_2d(x, "x");
    const auto quant = output_quant(scale, out_dtype);
    const void* xp = data_of(x, dt, "x");
    py::array y = new_quantized(quant->dtype, shape_of(x));
    void* yp = y.mutable_data();
    const int64_t rows = x.shape(0), cols = x.shape(1);
    py::gil_scoped_release release;
    trtllm::kernels::quantize_cpu(xp, dt, yp, *quant, rows, cols);
    return y;
}

py::array run_quant_gemm(const py::array& x, DType x_dtype, const trtllm::kernels::QuantGemmWeightCpu& w,
                         const std::string& out_dtype) {
    check_2d(x, "x");
    check_shape(x, {x.shape(0), static_cast<py::ssize_t>(w.k)}, "x");
    const DType ydt = activation_dtype(out_dtype);
    const void* xp = x_dtype == DType::kFloat8E4M3 || x_dtype == DType::kInt8 ? quantized_data(x, x_dtype, "x")
                                                                             : data_of(x, x_dtype, "x");
    py::array y = new_array(ydt, {x.shape(0), static_cast<py::ssize_t>(w.n)});
    void* yp = y.mutable_data();
    const int64_t m = x.shape(0);
    py::gil_scoped_release release;
    trtllm::kernels::quant_gemm_cpu(xp, x_dtype, w, yp, ydt, m);
    return y;
}

py::array fp8_linear(const py::array& x, const py::array& weight, float weight_scale, float input_scale,
                     const std::optional<py::array>& bias, const std::string& out_dtype) {
    check_2d(weight, "weight");
    const py::ssize_t n = weight.shape(0), k = weight.shape(1);
    const void* bp = nullptr;
    if (bias) { check_shape(*bias, {n}, "bias"); bp = data_of(*bias, DType::kFloat32, "bias"); }
    const auto w = trtllm::kernels::prepare_fp8_gemm_weight_cpu(quantized_data(weight, DType::kFloat8E4M3, "weight"), n,
                                                                k, weight_scale, input_scale, bp, DType::kFloat32);
    return run_quant_gemm(x, DType::kFloat8E4M3, w, out_dtype);
}

py::array int8_linear(const py::array& x, const py::array& weight, const py::array& weight_scale, float input_scale,
                      const std::optional<py::array>& bias, const std::string& out_dtype) {
    check_2d(weight, "weight");
    const py::ssize_t n = weight.shape(0), k = weight.shape(1);
    check_shape(weight_scale, {n}, "weight_scale");
    const void* bp = nullptr;
    if (bias) { check_shape(*bias, {n}, "bias"); bp = data_of(*bias, DType::kFloat32, "bias"); }
    const auto w = trtllm::kernels::prepare_int8_gemm_weight_cpu(
        quantized_data(weight, DType::kInt8, "weight"), n, k,
        static_cast<const float*>(data_of(weight_scale, DType::kFloat32, "weight_scale")), input_scale, bp, DType::kFloat32);
    return run_quant_gemm(x, DType::kInt8, w, out_dtype);
}

py::array weight_only_linear(const py::array& x, const py::array& weight, const py::array& weight_scale,
                             const std::string& dtype, int weight_bits, int64_t group_size,
                             const std::optional<py::array>& pre_quant_scale, const std::optional<py::array>& bias,
                             const std::optional<std::string>& out_dtype) {
    const DType dt = activation_dtype(dtype);
    check_2d(weight, "weight");
    const py::ssize_t n = weight.shape(0), k = weight.shape(1) * (weight_bits == 4 ? 2 : 1);
    const std::string kind = py::str(weight.dtype());
    if (kind != (weight_bits == 4 ? "uint8" : "int8")) {
        throw std::invalid_argument("weight has numpy dtype " + kind + ", expected " + (weight_bits == 4 ? "uint8" : "int8"));
    }
    if (group_size <= 0 || k % group_size != 0) throw std::invalid_argument("group_size must divide k");
    check_shape(weight_scale, {n, static_cast<py::ssize_t>(k / group_size)}, "weight_scale");
    const void* pre = nullptr;
    if (pre_quant_scale) { check_shape(*pre_quant_scale, {k}, "pre_quant_scale"); pre = data_of(*pre_quant_scale, dt, "pre_quant_scale"); }
    const void* bp = nullptr;
    if (bias) { check_shape(*bias, {n}, "bias"); bp = data_of(*bias, dt, "bias"); }
    const auto w = trtllm::kernels::prepare_weight_only_gemm_weight_cpu(weight.data(), weight_bits, n, k,
                                                                        data_of(weight_scale, dt, "weight_scale"),
                                                                        group_size, dt, pre, bp);
    return run_quant_gemm(x, dt, w, out_dtype.value_or(dtype));
}

py::array_t<float> rope_inv_freq(int head_dim, float theta, const std::string& scaling, float factor,
                                 float low_freq_factor, float high_freq_factor, int original_max_position_embeddings) {
    trtllm::kernels::RopeParams rope;
    rope.theta = theta;
    rope.scaling = rope_scaling(scaling);
    rope.factor = factor;
    rope.low_freq_factor = low_freq_factor;
    rope.high_freq_factor = high_freq_factor;
    rope.original_max_position_embeddings = original_max_position_embeddings;
    const std::vector<float> inv = trtllm::kernels::rope_inv_freq(head_dim, rope);
    py::array_t<float> y(static_cast<py::ssize_t>(inv.size()));
    std::copy(inv.begin(), inv.end(), y.mutable_data());
    return y;
}

// kv_layer [num_blocks, 2, num_kv_heads, tokens_per_block, head_dim] is updated in place.
// Requests' tokens are packed in order: token_start is the running sum of new_len.
py::array attention(const py::array& qkv, py::array& kv_layer, const py::array& past_len, const py::array& new_len,
                    const py::array& block_table, const std::string& dtype, int num_heads, int num_kv_heads,
                    int head_dim, const std::optional<py::array>& inv_freq, const std::optional<py::array>& q_norm,
                    const std::optional<py::array>& k_norm, float qk_norm_eps, const std::optional<float>& kv_scale) {
    const DType dt = activation_dtype(dtype);
    if (num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_heads % num_kv_heads != 0) {
        throw std::invalid_argument("need num_heads > 0 divisible by num_kv_heads > 0 and head_dim > 0");
    }
    if (kv_layer.ndim() != 5) throw std::invalid_argument("kv_layer must be 5-D, got shape " + shape_str(kv_layer));
    const py::ssize_t num_blocks = kv_layer.shape(0), tokens_per_block = kv_layer.shape(3);
    check_shape(kv_layer, {num_blocks, 2, num_kv_heads, tokens_per_block, head_dim}, "kv_layer");
    if (tokens_per_block <= 0) throw std::invalid_argument("tokens_per_block must be > 0");
    check_2d(block_table, "block_table");
    const py::ssize_t num_requests = block_table.shape(0), max_blocks = block_table.shape(1);
    check_shape(past_len, {num_requests}, "past_len");
    check_shape(new_len, {num_requests}, "new_len");
    const auto* past = static_cast<const int32_t*>(data_of(past_len, DType::kInt32, "past_len"));
    const auto* fresh = static_cast<const int32_t*>(data_of(new_len, DType::kInt32, "new_len"));
    const auto* table = static_cast<const int32_t*>(data_of(block_table, DType::kInt32, "block_table"));
    std::vector<int32_t> token_start(static_cast<size_t>(num_requests));
    int64_t num_tokens = 0;
    for (py::ssize_t r = 0; r < num_requests; ++r) {
        if (past[r] < 0 || fresh[r] < 1) {
            throw std::invalid_argument("request " + std::to_string(r) + ": need past_len >= 0 and new_len >= 1, got " +
                                        std::to_string(past[r]) + ", " + std::to_string(fresh[r]));
        }
        const int64_t blocks = (int64_t{past[r]} + fresh[r] + tokens_per_block - 1) / tokens_per_block;
        if (blocks > max_blocks) {
            throw std::invalid_argument("request " + std::to_string(r) + " needs " + std::to_string(blocks) +
                                        " blocks, block_table has " + std::to_string(max_blocks));
        }
        for (int64_t b = 0; b < blocks; ++b) {
            const int32_t id = table[r * max_blocks + b];
            if (id < 0 || id >= num_blocks) {
                throw std::invalid_argument("block_table[" + std::to_string(r) + ", " + std::to_string(b) + "] = " +
                                            std::to_string(id) + " is outside [0, " + std::to_string(num_blocks) + ")");
            }
        }
        token_start[static_cast<size_t>(r)] = static_cast<int32_t>(num_tokens);
        num_tokens += fresh[r];
    }
    check_shape(qkv, {static_cast<py::ssize_t>(num_tokens), (num_heads + 2 * num_kv_heads) * head_dim}, "qkv");
    trtllm::kernels::AttentionParams params;
    params.num_heads = num_heads;
    params.num_kv_heads = num_kv_heads;
    params.head_dim = head_dim;
    params.qk_norm_eps = qk_norm_eps;
    if (inv_freq) {
        check_shape(*inv_freq, {head_dim / 2}, "inv_freq");
        params.rope_inv_freq = static_cast<const float*>(data_of(*inv_freq, DType::kFloat32, "inv_freq"));
    }
    if (q_norm.has_value() != k_norm.has_value()) throw std::invalid_argument("pass both q_norm and k_norm or neither");
    if (q_norm) {
        check_shape(*q_norm, {head_dim}, "q_norm");
        check_shape(*k_norm, {head_dim}, "k_norm");
        params.q_norm = data_of(*q_norm, dt, "q_norm");
        params.k_norm = data_of(*k_norm, dt, "k_norm");
    }
    trtllm::kernels::PagedBatch batch;
    batch.num_requests = static_cast<int>(num_requests);
    batch.past_len = past;
    batch.new_len = fresh;
    batch.token_start = token_start.data();
    batch.block_table = table;
    batch.max_blocks_per_seq = static_cast<int>(max_blocks);
    batch.tokens_per_block = static_cast<int>(tokens_per_block);
    const void* qkv_p = data_of(qkv, dt, "qkv");
    float kv_scale_value = kv_scale.value_or(1.0f);
    void* kv_p = nullptr;
    if (kv_scale) {
        params.kv_scale = &kv_scale_value;
        kv_p = const_cast<void*>(quantized_data(kv_layer, DType::kFloat8E4M3, "kv_layer"));
        if (!kv_layer.writeable()) throw std::invalid_argument("kv_layer must be writeable");
    } else {
        kv_p = mutable_data_of(kv_layer, dt, "kv_layer");
    }
    py::array out = new_array(dt, {static_cast<py::ssize_t>(num_tokens), num_heads * head_dim});
    void* out_p = out.mutable_data();
    py::gil_scoped_release release;
    trtllm::kernels::attention_cpu(qkv_p, out_p, dt, kv_p, batch, params);
    return out;
}

}  // namespace

void bind_kernels(py::module_& m) {
    py::module_ k = m.def_submodule(
        "kernels",
        "CPU kernels of plugins/ over numpy arrays, for tests. dtype is 'float32', 'bfloat16' or 'float16'; "
        "16-bit activations are uint16 bit patterns (or float16 / ml_dtypes.bfloat16 arrays) and come back as uint16.");
    using namespace pybind11::literals;
    k.def("from_float", &from_float, "x"_a, "dtype"_a, "impl"_a = "row",
          "float32 array -> uint16 bits of dtype (impl 'row': kernel converters, 'scalar': dtype.h).");
    k.def("to_float", &to_float, "x"_a, "dtype"_a, "impl"_a = "row", "bits of dtype -> float32 array.");
    k.def("gemm", &gemm, "x"_a, "weight"_a, "bias"_a = py::none(), py::kw_only(), "dtype"_a,
          "weight_dtype"_a = py::none(), "out_dtype"_a = py::none(), "x[m, k] @ weight[n, k].T + bias");
    py::class_<PreparedGemm>(k, "GemmWeight", "A linear weight prepared once for the CPU GEMM.")
        .def_property_readonly("n", [](const PreparedGemm& p) { return p.w.n; })
        .def_property_readonly("k", [](const PreparedGemm& p) { return p.w.k; });
    k.def("prepare_gemm_weight", &prepare_gemm_weight, "weight"_a, "bias"_a = py::none(), py::kw_only(),
          "weight_dtype"_a, "weight [n, k] (+ bias [n]) -> GemmWeight, as the runtime does at engine load.");
    k.def("gemm", &gemm_prepared, "x"_a, "weight"_a, py::kw_only(), "dtype"_a, "out_dtype"_a = py::none(),
          "x[m, k] @ weight.T + bias with a prepared GemmWeight.");
    k.def("rms_norm", &rms_norm, "x"_a, "weight"_a, "dtype"_a, "chunk"_a = 0, "eps"_a = 1e-6f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none(),
          "RMSNorm of each chunk (0: the whole row) of each row of x [rows, dim]; quantized output with out_scale.");
    k.def("add_rms_norm", &add_rms_norm, "a"_a, "b"_a, "weight"_a, "dtype"_a, "eps"_a = 1e-6f,
          "out_scale"_a = py::none(), "out_dtype"_a = py::none(), "-> (normed, sum)");
    k.def("layer_norm", &layer_norm, "x"_a, "weight"_a, "bias"_a, "dtype"_a, "eps"_a = 1e-5f);
    k.def("add_layer_norm", &add_layer_norm, "a"_a, "b"_a, "weight"_a, "bias"_a, "dtype"_a, "eps"_a = 1e-5f,
          "-> (normed, sum)");
    k.def("add", &add, "a"_a, "b"_a, "dtype"_a);
    k.def("silu_mul", &silu_mul, "x"_a, "dtype"_a, "out_scale"_a = py::none(), "out_dtype"_a = py::none(),
          "x [rows, 2 * inter] -> silu(x[:, :inter]) * x[:, inter:]");
    k.def("quantize", &quantize, "x"_a, "scale"_a, py::kw_only(), "dtype"_a, "out_dtype"_a,
          "x [rows, cols] -> quantized (uint8 fp8 bits or int8) with float32 scale [1] or [cols]");
    k.def("fp8_linear", &fp8_linear, "x"_a, "weight"_a, "weight_scale"_a, "input_scale"_a, "bias"_a = py::none(),
          py::kw_only(), "out_dtype"_a = "float32", "x fp8 bits [m, k] @ weight fp8 bits [n, k].T (float32 bias)");
    k.def("int8_linear", &int8_linear, "x"_a, "weight"_a, "weight_scale"_a, "input_scale"_a, "bias"_a = py::none(),
          py::kw_only(), "out_dtype"_a = "float32");
    k.def("weight_only_linear", &weight_only_linear, "x"_a, "weight"_a, "weight_scale"_a, py::kw_only(), "dtype"_a,
          "weight_bits"_a, "group_size"_a, "pre_quant_scale"_a = py::none(), "bias"_a = py::none(),
          "out_dtype"_a = py::none());
    k.def("gelu_tanh", &gelu_tanh, "x"_a, "dtype"_a);
    k.def("add_bias", &add_bias, "x"_a, "bias"_a, "dtype"_a, "x [rows, n] + bias [n], as a new array");
    k.def("embedding", &embedding, "ids"_a, "table"_a, "dtype"_a);
    k.def("gather_rows", &gather_rows, "x"_a, "rows"_a);
    k.def("concat_shards", &concat_shards, "gathered"_a,
          "gathered [tp, rows, shard_cols] (an all-gather's layout) -> [rows, tp * shard_cols] (all_gather's)");
    k.def("rope_inv_freq", &rope_inv_freq, "head_dim"_a, "theta"_a, "scaling"_a = "none", "factor"_a = 1.0f,
          "low_freq_factor"_a = 1.0f, "high_freq_factor"_a = 4.0f, "original_max_position_embeddings"_a = 8192);
    k.def("attention", &attention, "qkv"_a, "kv_layer"_a, "past_len"_a, "new_len"_a, "block_table"_a, py::kw_only(),
          "dtype"_a, "num_heads"_a, "num_kv_heads"_a, "head_dim"_a, "inv_freq"_a = py::none(), "q_norm"_a = py::none(),
          "k_norm"_a = py::none(), "qk_norm_eps"_a = 1e-6f, "kv_scale"_a = py::none(),
          "Paged attention over one layer's KV blocks (kv_layer is updated in place); returns out [T, h * d].");
}
