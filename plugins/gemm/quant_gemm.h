// Quantized GEMMs: `fp8_linear`, `int8_linear` and `weight_only_linear` of op set v2 (docs/opset.md).
//
// The CPU versions are exact emulations of the GPU contract, not fast kernels: the quantized values,
// scales, roundings and saturations are the GPU's; only the order of float32 sums may differ
// (INT8 sums are exact int32, as on the GPU).
#pragma once

#include <cstdint>
#include <vector>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

enum class QuantGemmKind : int32_t {
    kFp8,         // x fp8 [m, k], w fp8 [n, k]; y = (x·wᵀ) * (input_scale * weight_scale) + bias
    kInt8,        // x int8, w int8; y = float(int32 x·wᵀ) * (input_scale * weight_scale[n]) + bias
    kWeightOnly,  // x activation dtype, w int8 or packed int4 with per-group scales (W8A16 / W4A16)
};

// A quantized linear layer's weights as the CPU kernel reads them: the engine's tensors in place,
// small per-channel vectors converted to float32 once at engine load.
struct QuantGemmWeightCpu {
    QuantGemmKind kind = QuantGemmKind::kFp8;
    int64_t n = 0, k = 0;
    const void* weight = nullptr;        // fp8 / int8 [n, k]; packed int4: uint8 [n, k / 2], even k in the low nibble
    int weight_bits = 8;                 // weight-only: 8 or 4
    DType act_dtype = DType::kFloat32;   // weight-only: the activation dtype (of x, scales, dequantized weights)
    std::vector<float> alpha;            // fp8 [1], int8 [n]: input_scale * weight_scale in float32
    const void* group_scale = nullptr;   // weight-only: [n, k / group_size] in act_dtype, not owned
    int64_t group_size = 0;
    std::vector<float> pre_quant_scale;  // weight-only: [k] or empty
    std::vector<float> bias;             // [n] or empty
};

// Bias, scales in the dtypes docs/opset.md gives; every pointer must outlive the result.
QuantGemmWeightCpu prepare_fp8_gemm_weight_cpu(const void* weight, int64_t n, int64_t k, float weight_scale,
                                               float input_scale, const void* bias, DType bias_dtype);
QuantGemmWeightCpu prepare_int8_gemm_weight_cpu(const void* weight, int64_t n, int64_t k, const float* weight_scale,
                                                float input_scale, const void* bias, DType bias_dtype);
QuantGemmWeightCpu prepare_weight_only_gemm_weight_cpu(const void* weight, int weight_bits, int64_t n, int64_t k,
                                                       const void* group_scale, int64_t group_size, DType act_dtype,
                                                       const void* pre_quant_scale, const void* bias);

// y [m, n] in an activation dtype or float32. x: fp8 / int8 for kFp8 / kInt8, else act_dtype.
void quant_gemm_cpu(const void* x, DType x_dtype, const QuantGemmWeightCpu& w, void* y, DType y_dtype, int64_t m);

// The dequantized weight rows [n0, n0 + rows) as float32 (weight-only: rounded to act_dtype; fp8 / int8:
// the integer or fp8 values, unscaled). For tests and the GEMM itself.
void dequantize_weight_rows(const QuantGemmWeightCpu& w, int64_t n0, int64_t rows, float* out);

}  // namespace trtllm::kernels
