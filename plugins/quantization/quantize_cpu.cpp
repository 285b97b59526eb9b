#include "quantization/quantize.h"

#include <stdexcept>
#include <string>

#include "cpu_common.h"

namespace trtllm::kernels {

const float* fp8_e4m3_table() {
    static const std::vector<float> table = [] {
        std::vector<float> t(256);
        for (int v = 0; v < 256; ++v) {
            const int exp = (v >> 3) & 0xf, mant = v & 7;
            float x;
            if (exp == 0xf && mant == 7) {
                x = std::nanf("");
            } else if (exp == 0) {
                x = std::ldexp(static_cast<float>(mant), -9);
            } else {
                x = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
            }
            t[static_cast<size_t>(v)] = (v & 0x80) ? -x : x;
        }
        return t;
    }();
    return table.data();
}

OutputQuant make_output_quant(DType dtype, const float* scale, int64_t n) {
    if (dtype != DType::kFloat8E4M3 && dtype != DType::kInt8) {
        throw std::invalid_argument(std::string("quantized outputs are float8_e4m3fn or int8, got ") + dtype_name(dtype));
    }
    if (n < 1) throw std::invalid_argument("quantization needs at least one scale");
    OutputQuant q;
    q.dtype = dtype;
    q.inv_scale.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        if (!(std::isfinite(scale[i]) && scale[i] > 0.0f)) {
            throw std::invalid_argument("quantization scale[" + std::to_string(i) + "] = " + std::to_string(scale[i]) +
                                        " must be finite and > 0");
        }
        q.inv_scale[static_cast<size_t>(i)] = 1.0f / scale[i];
    }
    return q;
}

void quantize_row(const float* src, int64_t n, int64_t col0, const OutputQuant& q, void* dst) {
    const float* inv = q.inv_scale.data();
    const bool per_channel = q.per_channel();
    if (q.dtype == DType::kFloat8E4M3) {
        auto* d = static_cast<uint8_t*>(dst);
        for (int64_t i = 0; i < n; ++i) d[i] = float_to_fp8_e4m3(src[i] * inv[per_channel ? col0 + i : 0]);
    } else {
        auto* d = static_cast<int8_t*>(dst);
        for (int64_t i = 0; i < n; ++i) d[i] = float_to_int8(src[i] * inv[per_channel ? col0 + i : 0]);
    }
}

void store_output_row(const float* src, DType act_dtype, const OutputQuant* quant, void* base, int64_t row,
                      int64_t cols) {
    if (quant == nullptr) {
        cpu::store_row(src, act_dtype, cols, cpu::elem_ptr(base, act_dtype, row * cols));
    } else {
        quantize_row(src, cols, 0, *quant, static_cast<char*>(base) + row * cols);
    }
}

void quantize_cpu(const void* x, DType x_dtype, void* y, const OutputQuant& q, int64_t rows, int64_t cols) {
    cpu::check_float_dtype(x_dtype);
    if (rows < 0 || cols < 0) throw std::invalid_argument("quantize: negative shape");
    if (q.per_channel() && static_cast<int64_t>(q.inv_scale.size()) != cols) {
        throw std::invalid_argument("quantize: " + std::to_string(q.inv_scale.size()) + " scales for " +
                                    std::to_string(cols) + " columns");
    }
    cpu::for_each_row(x, x_dtype, rows, cols,
                      [&](float* row, int64_t r) { quantize_row(row, cols, 0, q, static_cast<char*>(y) + r * cols); });
}

void load_quantized_row(const void* src, DType dtype, int64_t n, float* dst) {
    if (dtype == DType::kFloat8E4M3) {
        const float* t = fp8_e4m3_table();
        const auto* s = static_cast<const uint8_t*>(src);
        for (int64_t i = 0; i < n; ++i) dst[i] = t[s[i]];
    } else if (dtype == DType::kInt8) {
        const auto* s = static_cast<const int8_t*>(src);
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
    } else {
        throw std::invalid_argument(std::string("expected a quantized dtype (float8_e4m3fn, int8), got ") + dtype_name(dtype));
    }
}

}  // namespace trtllm::kernels
