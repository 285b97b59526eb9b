// CPU quantized GEMMs: weights widened to float32 a block of rows at a time, products by OpenBLAS
// sgemm. FP8 products are exact in float32 (4 x 4 mantissa bits) and summed in float32, as the
// tensor cores do. INT8 products are summed exactly: sgemm over chunks of kInt8Chunk inputs keeps
// every partial sum an integer below 2^24 (exact in float32 whatever the order), and the chunks
// add up in int32, so the result is the GPU's int32 accumulator bit for bit.
#include "gemm/quant_gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu_common.h"
#include "quantization/quantize.h"

namespace trtllm::kernels {
namespace {

constexpr int64_t kWeightBlock = 128;   // weight rows widened per sgemm call
constexpr int64_t kInt8Chunk = 1024;    // 1024 * 128 * 127 < 2^24

void check_dims(int64_t n, int64_t k) {
    if (n < 0 || k < 0 || n > INT32_MAX || k > INT32_MAX) {
        throw std::invalid_argument("quantized gemm: n = " + std::to_string(n) + ", k = " + std::to_string(k) +
                                    " must lie in [0, 2^31)");
    }
}

std::vector<float> to_float_vector(const void* p, DType dt, int64_t n) {
    std::vector<float> v;
    if (p == nullptr) return v;
    v.resize(static_cast<size_t>(n));
    cpu::load_row(p, dt, n, v.data());
    return v;
}

void sgemm(const float* x, int64_t m, const float* w, int64_t nb, int64_t kb, int64_t ldx, int64_t ldw, float* y,
           int64_t ldy) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(nb),
                static_cast<int>(kb), 1.0f, x, static_cast<int>(ldx), w, static_cast<int>(ldw), 0.0f, y,
                static_cast<int>(ldy));
}

}  // namespace

QuantGemmWeightCpu prepare_fp8_gemm_weight_cpu(const void* weight, int64_t n, int64_t k, float weight_scale,
                                               float input_scale, const void* bias, DType bias_dtype) {
    check_dims(n, k);
    QuantGemmWeightCpu w;
    w.kind = QuantGemmKind::kFp8;
    w.n = n;
    w.k = k;
    w.weight = weight;
    w.alpha = {input_scale * weight_scale};
    w.bias = to_float_vector(bias, bias_dtype, n);
    return w;
}

QuantGemmWeightCpu prepare_int8_gemm_weight_cpu(const void* weight, int64_t n, int64_t k, const float* weight_scale,
                                                float input_scale, const void* bias, DType bias_dtype) {
    check_dims(n, k);
    QuantGemmWeightCpu w;
    w.kind = QuantGemmKind::kInt8;
    w.n = n;
    w.k = k;
    w.weight = weight;
    w.alpha.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) w.alpha[static_cast<size_t>(i)] = input_scale * weight_scale[i];
    w.bias = to_float_vector(bias, bias_dtype, n);
    return w;
}

QuantGemmWeightCpu prepare_weight_only_gemm_weight_cpu(const void* weight, int weight_bits, int64_t n, int64_t k,
                                                       const void* group_scale, int64_t group_size, DType act_dtype,
                                                       const void* pre_quant_scale, const void* bias) {
    check_dims(n, k);
    cpu::check_float_dtype(act_dtype);
    if (weight_bits != 8 && weight_bits != 4) {
        throw std::invalid_argument("weight_only_linear: weight_bits must be 8 or 4, got " + std::to_string(weight_bits));
    }
    if (group_size <= 0 || k % group_size != 0 || (weight_bits == 4 && k % 2 != 0)) {
        throw std::invalid_argument("weight_only_linear: group_size " + std::to_string(group_size) +
                                    " must divide k = " + std::to_string(k) + " (and k must be even for int4)");
    }
    QuantGemmWeightCpu w;
    w.kind = QuantGemmKind::kWeightOnly;
    w.n = n;
    w.k = k;
    w.weight = weight;
    w.weight_bits = weight_bits;
    w.act_dtype = act_dtype;
    w.group_scale = group_scale;
    w.group_size = group_size;
    w.pre_quant_scale = to_float_vector(pre_quant_scale, act_dtype, k);
    w.bias = to_float_vector(bias, act_dtype, n);
    return w;
}

void dequantize_weight_rows(const QuantGemmWeightCpu& w, int64_t n0, int64_t rows, float* out) {
    const int64_t k = w.k;
    if (w.kind != QuantGemmKind::kWeightOnly) {
        const DType dt = w.kind == QuantGemmKind::kFp8 ? DType::kFloat8E4M3 : DType::kInt8;
        load_quantized_row(static_cast<const char*>(w.weight) + n0 * k, dt, rows * k, out);
        return;
    }
    const int64_t groups = k / w.group_size;
    std::vector<float> scales(static_cast<size_t>(groups));
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        float* dst = out + r * k;
        cpu::load_row(cpu::elem_ptr(w.group_scale, w.act_dtype, n * groups), w.act_dtype, groups, scales.data());
        if (w.weight_bits == 8) {
            const auto* q = static_cast<const int8_t*>(w.weight) + n * k;
            for (int64_t i = 0; i < k; ++i) dst[i] = static_cast<float>(q[i]) * scales[static_cast<size_t>(i / w.group_size)];
        } else {
            const auto* q = static_cast<const uint8_t*>(w.weight) + n * (k / 2);
            for (int64_t i = 0; i < k; ++i) {
                const int nibble = (q[i / 2] >> ((i & 1) * 4)) & 0xf;
                const int value = nibble >= 8 ? nibble - 16 : nibble;  // two's complement int4
                dst[i] = static_cast<float>(value) * scales[static_cast<size_t>(i / w.group_size)];
            }
        }
        // The product is exact in float32 for 16-bit scales; one rounding to the activation dtype,
        // as the GPU kernel's multiply in that dtype does.
        cpu::round_row(dst, w.act_dtype, k);
    }
}

void quant_gemm_cpu(const void* x, DType x_dtype, const QuantGemmWeightCpu& w, void* y, DType y_dtype, int64_t m) {
    cpu::check_float_dtype(y_dtype);
    if (m < 0 || m > INT32_MAX) throw std::invalid_argument("quantized gemm: bad m " + std::to_string(m));
    const DType want_x = w.kind == QuantGemmKind::kFp8    ? DType::kFloat8E4M3
                         : w.kind == QuantGemmKind::kInt8 ? DType::kInt8
                                                          : w.act_dtype;
    if (x_dtype != want_x) {
        throw std::invalid_argument(std::string("quantized gemm: input is ") + dtype_name(x_dtype) + ", expected " +
                                    dtype_name(want_x));
    }
    const int64_t n = w.n, k = w.k;
    if (m == 0 || n == 0) return;
    thread_local std::vector<float> x_buf, w_buf, y_buf, c_buf;
    thread_local std::vector<int32_t> acc_buf;
    float* xf = cpu::grow(x_buf, m * k);
    if (w.kind == QuantGemmKind::kWeightOnly) {
        cpu::load_row(x, x_dtype, m * k, xf);
        if (!w.pre_quant_scale.empty()) {  // AWQ / SmoothQuant scale left on this input: x * s, rounded once
            for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < k; ++j) xf[i * k + j] *= w.pre_quant_scale[static_cast<size_t>(j)];
            }
            cpu::round_row(xf, x_dtype, m * k);
        }
    } else {
        load_quantized_row(x, x_dtype, m * k, xf);
    }
    float* yf = cpu::grow(y_buf, m * n);
    float* wf = cpu::grow(w_buf, kWeightBlock * k);
    int32_t* acc = nullptr;
    if (w.kind == QuantGemmKind::kInt8) {
        if (static_cast<int64_t>(acc_buf.size()) < m * n) acc_buf.resize(static_cast<size_t>(m * n));
        acc = acc_buf.data();
        std::fill(acc, acc + m * n, 0);
    }
    for (int64_t n0 = 0; n0 < n; n0 += kWeightBlock) {
        const int64_t nb = std::min(kWeightBlock, n - n0);
        dequantize_weight_rows(w, n0, nb, wf);
        if (w.kind != QuantGemmKind::kInt8) {
            if (k == 0) {
                for (int64_t i = 0; i < m; ++i) std::fill(yf + i * n + n0, yf + i * n + n0 + nb, 0.0f);
            } else {
                sgemm(xf, m, wf, nb, k, k, k, yf + n0, n);
            }
            continue;
        }
        float* c = cpu::grow(c_buf, m * nb);
        for (int64_t k0 = 0; k0 < k; k0 += kInt8Chunk) {
            const int64_t kb = std::min(kInt8Chunk, k - k0);
            sgemm(xf + k0, m, wf + k0, nb, kb, k, k, c, nb);
            for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < nb; ++j) acc[i * n + n0 + j] += static_cast<int32_t>(c[i * nb + j]);
            }
        }
    }
    // Epilogue: float32 multiply by alpha, then the bias; one rounding to the output dtype.
    for (int64_t i = 0; i < m; ++i) {
        float* row = yf + i * n;
        for (int64_t j = 0; j < n; ++j) {
            float v = row[j];
            if (w.kind == QuantGemmKind::kFp8) v = v * w.alpha[0];
            if (w.kind == QuantGemmKind::kInt8) v = static_cast<float>(acc[i * n + j]) * w.alpha[static_cast<size_t>(j)];
            if (!w.bias.empty()) v = v + w.bias[static_cast<size_t>(j)];
            row[j] = v;
        }
    }
    cpu::store_row(yf, y_dtype, m * n, y);
}

}  // namespace trtllm::kernels
