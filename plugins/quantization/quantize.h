// Quantization numerics shared by every quantized op (op set v2, docs/opset.md "Quantization").
//
// These are the GPU's conversions, reproduced bit for bit so CPU tests catch quantization bugs:
//   float32 -> float8_e4m3fn: round to nearest even, saturate to +-448, NaN stays NaN
//                             (PTX cvt.rn.satfinite.e4m3x2.f32, what cuBLASLt / TensorRT-LLM use);
//   float32 -> int8:          round half to even, saturate to [-128, 127], NaN -> 0
//                             (PTX cvt.rni.sat.s8.f32, TensorRT-LLM's cuda_cast<int8_t>).
// A value is quantized as q = convert(x * inv_scale) with inv_scale = 1.0f / scale computed once in
// float32, the form TensorRT-LLM's quantize kernels take ("scale_orig_quant").
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

inline uint8_t float_to_fp8_e4m3(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;                    // NaN (sign dropped, as cvt does)
    if (a >= 0x43e00000u) return sign | 0x7e;            // >= 448 (and inf): saturate
    if (a < 0x3c800000u) {                               // below 2^-6: subnormal step 2^-9
        float m;
        const uint32_t abits = a;
        std::memcpy(&m, &abits, 4);
        // Exact scaling by a power of two, then round to nearest even (default FP environment);
        // 8 lands on the smallest normal, whose encoding 0x08 continues the subnormal codes.
        return sign | static_cast<uint8_t>(std::nearbyint(m * 512.0f));
    }
    // Normal: round the 23-bit mantissa to 3 bits, nearest even; a carry bumps the exponent.
    const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
    const uint32_t code = ((r >> 23) - 127u + 7u) << 3 | ((r >> 20) & 7u);
    return sign | static_cast<uint8_t>(code > 0x7eu ? 0x7eu : code);
}

// The 256 float values of float8_e4m3fn codes (0x7f / 0xff are NaN).
const float* fp8_e4m3_table();

inline float fp8_e4m3_to_float(uint8_t v) { return fp8_e4m3_table()[v]; }

inline int8_t float_to_int8(float f) {
    if (std::isnan(f)) return 0;
    const float r = std::nearbyint(f);  // ties to even in the default rounding mode
    return static_cast<int8_t>(r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r));
}

// How an op stores a quantized output: dtype kFloat8E4M3 or kInt8, and the reciprocals of its
// `out_scale` (one per tensor, or one per column of the last dim).
struct OutputQuant {
    DType dtype = DType::kFloat8E4M3;
    std::vector<float> inv_scale;   // size 1 or cols

    bool per_channel() const { return inv_scale.size() > 1; }
};

// `scale` [n] float32 -> OutputQuant with 1 / scale; throws unless every scale is finite and > 0.
OutputQuant make_output_quant(DType dtype, const float* scale, int64_t n);

// dst[0..n) = quantize(src[0..n)); `col0` is the column of src[0] (per-channel scales).
void quantize_row(const float* src, int64_t n, int64_t col0, const OutputQuant& q, void* dst);

// Rounds to the activation dtype or quantizes, per `quant` (nullptr: plain store_row). Row `row` of a
// [rows, cols] output at `base`.
void store_output_row(const float* src, DType act_dtype, const OutputQuant* quant, void* base, int64_t row,
                      int64_t cols);

// The standalone `quantize` op: x [rows, cols] in an activation dtype -> y quantized.
void quantize_cpu(const void* x, DType x_dtype, void* y, const OutputQuant& q, int64_t rows, int64_t cols);

// x [n] quantized (float8_e4m3fn or int8) -> float32, without scaling.
void load_quantized_row(const void* src, DType dtype, int64_t n, float* dst);

}  // namespace trtllm::kernels
