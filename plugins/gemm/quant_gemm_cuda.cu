// Quantized GEMV (decode: m <= 4) and the int8 epilogue. The GEMV is the bf16 GEMV's scheme with
// 1-byte elements: one warp per output column, each lane reading 16-byte vectors (16 weights) of
// the row, four in flight, used for all m rows. FP8 products are exact in float32 and summed in
// float32; int8 products are summed exactly in int32 by dp4a. The epilogue multiplies and adds
// with __fmul_rn / __fadd_rn so that nvcc cannot contract them into one FMA: the op contract
// rounds after the multiply, as the CPU emulation does.
#include <string>

#include "cuda_common.cuh"
#include "gemm/quant_gemm_cuda.h"
#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

constexpr int kBytesPerLoad = 16;

__device__ __forceinline__ float2 fp8x2_to_float2(uint32_t two) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
    return __half22float2(__half2(h));
}

// acc += Σ of the 16 products of two 16-byte vectors of fp8 (float acc) or int8 (int acc).
__device__ __forceinline__ void dot16(const uint4& a, const uint4& b, float& acc) {
    const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 a0 = fp8x2_to_float2(av[i]), a1 = fp8x2_to_float2(av[i] >> 16);
        const float2 b0 = fp8x2_to_float2(bv[i]), b1 = fp8x2_to_float2(bv[i] >> 16);
        acc += a0.x * b0.x;  // products of two E4M3 values are exact in float32
        acc += a0.y * b0.y;
        acc += a1.x * b1.x;
        acc += a1.y * b1.y;
    }
}

__device__ __forceinline__ void dot16(const uint4& a, const uint4& b, int& acc) {
    acc = __dp4a(static_cast<int>(a.x), static_cast<int>(b.x), acc);
    acc = __dp4a(static_cast<int>(a.y), static_cast<int>(b.y), acc);
    acc = __dp4a(static_cast<int>(a.z), static_cast<int>(b.z), acc);
    acc = __dp4a(static_cast<int>(a.w), static_cast<int>(b.w), acc);
}

__device__ __forceinline__ uint4 load16(const uint8_t* p) { return *reinterpret_cast<const uint4*>(p); }

template <class Acc>
__device__ __forceinline__ Acc warp_sum_acc(Acc v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The op's epilogue on one accumulator: fp8 fl(acc · alpha), int8 fl(float(acc) · alpha[j]); + bias.
__device__ __forceinline__ float epilogue(float acc, float alpha, const float* /*alpha_per_n*/, int /*j*/) {
    return __fmul_rn(acc, alpha);
}
__device__ __forceinline__ float epilogue(int acc, float /*alpha*/, const float* alpha_per_n, int j) {
    return __fmul_rn(__int2float_rn(acc), alpha_per_n[j]);
}

template <class Acc, class TY, int M>
__global__ void quant_gemv_kernel(const uint8_t* __restrict__ x, const uint8_t* __restrict__ w,
                                  const TY* __restrict__ bias, TY* __restrict__ y, int n, int k, float alpha,
                                  const float* __restrict__ alpha_per_n) {
    constexpr int V = kBytesPerLoad;
    constexpr int kUnroll = 4;
    const int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (j >= n) return;
    const int lane = threadIdx.x % 32;
    const uint8_t* wr = w + int64_t{j} * k;
    Acc acc[M];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) acc[mi] = 0;
    int x0 = lane * V;
    for (; x0 + (kUnroll - 1) * 32 * V < k; x0 += kUnroll * 32 * V) {
        uint4 wv[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wv[u] = load16(wr + x0 + u * 32 * V);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
            for (int mi = 0; mi < M; ++mi) dot16(wv[u], load16(x + int64_t{mi} * k + x0 + u * 32 * V), acc[mi]);
        }
    }
    for (; x0 < k; x0 += 32 * V) {
        const uint4 wv = load16(wr + x0);
#pragma unroll
        for (int mi = 0; mi < M; ++mi) dot16(wv, load16(x + int64_t{mi} * k + x0), acc[mi]);
    }
#pragma unroll
    for (int mi = 0; mi < M; ++mi) acc[mi] = warp_sum_acc(acc[mi]);
    if (lane == 0) {
#pragma unroll
        for (int mi = 0; mi < M; ++mi) {
            float v = epilogue(acc[mi], alpha, alpha_per_n, j);
            if (bias != nullptr) v = __fadd_rn(v, cuda::to_float(bias[j]));
            y[int64_t{mi} * n + j] = cuda::from_float<TY>(v);
        }
    }
}

template <class Acc, class TY>
void launch_quant_gemv(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n, int64_t k,
                       const GemmScales& s, cudaStream_t stream) {
    constexpr int kWarps = 4;
    const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
    const auto* xp = static_cast<const uint8_t*>(x);
    const auto* wp = static_cast<const uint8_t*>(w);
    const auto* bp = static_cast<const TY*>(bias);
    auto* yp = static_cast<TY*>(y);
    const int ni = static_cast<int>(n), ki = static_cast<int>(k);
    switch (m) {
        case 1: quant_gemv_kernel<Acc, TY, 1><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki, s.alpha, s.alpha_per_n); break;
        case 2: quant_gemv_kernel<Acc, TY, 2><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki, s.alpha, s.alpha_per_n); break;
        case 3: quant_gemv_kernel<Acc, TY, 3><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki, s.alpha, s.alpha_per_n); break;
        default: quant_gemv_kernel<Acc, TY, 4><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki, s.alpha, s.alpha_per_n); break;
    }
    CHECK_LAUNCH("quant_gemv_kernel");
}

template <class TY>
__global__ void int8_epilogue_kernel(const int32_t* __restrict__ acc, const float* __restrict__ alpha,
                                     const TY* __restrict__ bias, TY* __restrict__ y, int64_t total, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t c = i % n;
        float v = __fmul_rn(__int2float_rn(acc[i]), alpha[c]);
        if (bias != nullptr) v = __fadd_rn(v, cuda::to_float(bias[c]));
        y[i] = cuda::from_float<TY>(v);
    }
}

__global__ void fill_random_quantized_kernel(uint8_t* p, int64_t n, uint32_t seed, bool int8) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
        uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        p[i] = int8 ? static_cast<uint8_t>(static_cast<int>(h % 255u) - 127)
                    : cuda::float_to_fp8(static_cast<float>(h & 0xffffu) / 32768.0f - 1.0f);
    }
}

}  // namespace

void quant_gemv_cuda(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y,
                     const GemmScales& scales, cudaStream_t stream) {
    if (m < 1 || m > kGemvMaxRows) throw std::invalid_argument("quantized GEMV: m = " + std::to_string(m) + " > 4");
    check_quantized_gemm_shape(s);
    const bool int8 = s.x_dtype == DType::kInt8;
    if (int8 && scales.alpha_per_n == nullptr) throw std::invalid_argument("int8 GEMV needs alpha_per_n");
    TRTLLM_DISPATCH_FLOAT(s.y_dtype, TY, {
        if (int8) {
            launch_quant_gemv<int, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
        } else {
            launch_quant_gemv<float, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
        }
    });
}

void int8_epilogue_cuda(const int32_t* acc, const float* alpha, const void* bias, void* y, DType y_dtype, int64_t m,
                        int64_t n, cudaStream_t stream) {
    if (m <= 0 || n <= 0) return;
    constexpr int kThreads = 256;
    TRTLLM_DISPATCH_FLOAT(y_dtype, TY, {
        int8_epilogue_kernel<TY><<<cuda::blocks_for(m * n, kThreads), kThreads, 0, stream>>>(
            acc, alpha, static_cast<const TY*>(bias), static_cast<TY*>(y), m * n, n);
    });
    CHECK_LAUNCH("int8_epilogue_kernel");
}

void fill_random_quantized(void* p, DType dtype, int64_t n, uint32_t seed, cudaStream_t stream) {
    if (dtype != DType::kInt8 && dtype != DType::kFloat8E4M3) {
        throw std::invalid_argument(std::string("fill_random_quantized: not a quantized dtype: ") + dtype_name(dtype));
    }
    if (n <= 0) return;
    fill_random_quantized_kernel<<<cuda::blocks_for(n, 256), 256, 0, stream>>>(static_cast<uint8_t*>(p), n, seed,
                                                                               dtype == DType::kInt8);
    CHECK_LAUNCH("fill_random_quantized_kernel");
}

}  // namespace trtllm::kernels
