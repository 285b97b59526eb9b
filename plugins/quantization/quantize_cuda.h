// CUDA quantization (op set v2, docs/opset.md "Quantization"): the `quantize` op and the
// description of a quantized output that the norm and activation kernels take. Same numerics as
// quantize.h, bit for bit: q = convert(x * inv_scale), inv_scale = 1 / scale computed once in
// float32 on the host (make_output_quant), float8_e4m3fn by cvt.rn.satfinite, int8 round half to
// even with saturation to [-128, 127] and NaN -> 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

// A quantized output on the device: dtype kFloat8E4M3 or kInt8 and the reciprocals of its
// out_scale (device float32, one per tensor or one per column of the last dim).
struct OutputQuantCuda {
    DType dtype = DType::kFloat8E4M3;
    const float* inv_scale = nullptr;
    int64_t num_scales = 1;

    bool per_channel() const { return num_scales > 1; }
};

// Throws std::invalid_argument unless `q` is a quantized dtype with 1 or `cols` scales.
void check_output_quant(const OutputQuantCuda& q, int64_t cols, const char* op);

// The standalone `quantize` op: x [rows, cols] in a float activation dtype -> y quantized.
void quantize_cuda(const void* x, DType x_dtype, void* y, const OutputQuantCuda& q, int64_t rows, int64_t cols,
                   cudaStream_t stream);

}  // namespace trtllm::kernels
