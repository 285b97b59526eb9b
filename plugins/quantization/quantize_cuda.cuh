// Device side of the quantized outputs (quantize_cuda.h): the conversions, and store functors a
// kernel writes its float32 results through, so one kernel body serves the activation dtype
// and both quantized dtypes. Internal to the CUDA kernels.
#pragma once

#include <cuda_fp8.h>

#include "cuda_common.cuh"
#include "quantization/quantize_cuda.h"

namespace trtllm::kernels::cuda {

// float32 -> float8_e4m3fn bits: round to nearest even, saturate to +-448, NaN -> 0x7f
// (cvt.rn.satfinite.e4m3x2.f32).
__device__ __forceinline__ uint8_t float_to_fp8(float v) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// float32 -> int8: round half to even, saturate to [-128, 127], NaN -> 0 (cvt.rni.sat.s8.f32).
__device__ __forceinline__ int8_t float_to_int8(float v) {
    if (isnan(v)) return 0;
    const int r = __float2int_rn(v);  // saturates to INT_MIN / INT_MAX beyond the int range
    return static_cast<int8_t>(r < -128 ? -128 : (r > 127 ? 127 : r));
}

__device__ __forceinline__ float fp8_to_float(uint8_t bits) {
    __nv_fp8_e4m3 v;
    v.__x = bits;
    return static_cast<float>(v);
}

// y[i] = round(v) in the activation dtype T.
template <class T>
struct PlainStore {
    T* y;
    __device__ __forceinline__ void operator()(int64_t i, int64_t /*col*/, float v) const { y[i] = from_float<T>(v); }
};

// y[i] = Q(v, scale[col]): Q stores convert(v * inv_scale) (one float32 multiply, no FMA to
// contract it with: the product is converted directly).
template <class Q>
struct QuantStore {
    Q* y;
    const float* inv_scale;
    bool per_channel;
    __device__ __forceinline__ void operator()(int64_t i, int64_t col, float v) const {
        const float s = v * inv_scale[per_channel ? col : 0];
        if constexpr (sizeof(Q) == 1 && static_cast<Q>(-1) < 0) {
            y[i] = float_to_int8(s);
        } else {
            y[i] = float_to_fp8(s);
        }
    }
};

using Fp8Store = QuantStore<uint8_t>;
using Int8Store = QuantStore<int8_t>;

}  // namespace trtllm::kernels::cuda

// Runs the statement with `Store` bound to the store functor of an output (`quant` null: the
// activation dtype T) and `store` constructed over `out`.
#define TRTLLM_DISPATCH_STORE(T, quant, out, ...)                                                        \
    if ((quant) == nullptr) {                                                                            \
        using Store = ::trtllm::kernels::cuda::PlainStore<T>;                                            \
        const Store store{static_cast<T*>(out)};                                                         \
        __VA_ARGS__;                                                                                     \
    } else if ((quant)->dtype == ::trtllm::DType::kInt8) {                                               \
        using Store = ::trtllm::kernels::cuda::Int8Store;                                                \
        const Store store{static_cast<int8_t*>(out), (quant)->inv_scale, (quant)->per_channel()};        \
        __VA_ARGS__;                                                                                     \
    } else {                                                                                             \
        using Store = ::trtllm::kernels::cuda::Fp8Store;                                                 \
        const Store store{static_cast<uint8_t*>(out), (quant)->inv_scale, (quant)->per_channel()};       \
        __VA_ARGS__;                                                                                     \
    }
