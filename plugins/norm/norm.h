// RMSNorm / LayerNorm, optionally fused with the residual add. float32 math, one rounding per output.
#pragma once

#include <cstdint>

#include "quantization/quantize.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

// `quant` (op set v2): when set, the (first) output is quantized from the float32 result, never
// rounded to `dtype` first: `y` then holds float8_e4m3fn / int8 elements.

// y = each `chunk`-sized slice of each row normalized: x * rsqrt(mean(x^2) + eps) * weight[chunk].
// chunk == dim for a hidden-state norm; chunk == head_dim for a per-head (q/k) norm.
void rms_norm_cpu(const void* x, const void* weight, void* y, DType dtype, int64_t rows, int64_t dim,
                  int64_t chunk, float eps, const OutputQuant* quant = nullptr);

// sum = round(a + b); normed = rms_norm(sum) over the whole row. sum may be a (in place: each row is
// read before it is written), as all_reduce_add_rms_norm uses it.
void add_rms_norm_cpu(const void* a, const void* b, const void* weight, void* normed, void* sum, DType dtype,
                      int64_t rows, int64_t dim, float eps, const OutputQuant* quant = nullptr);

void layer_norm_cpu(const void* x, const void* weight, const void* bias, void* y, DType dtype, int64_t rows,
                    int64_t dim, float eps, const OutputQuant* quant = nullptr);

void add_layer_norm_cpu(const void* a, const void* b, const void* weight, const void* bias, void* normed,
                        void* sum, DType dtype, int64_t rows, int64_t dim, float eps,
                        const OutputQuant* quant = nullptr);

}  // namespace trtllm::kernels
