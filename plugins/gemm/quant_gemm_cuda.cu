// Quantized GEMV (decode: m <= 4) and the int8 epilogue. The GEMV is the bf16 GEMV's scheme with
// 1-byte elements: each warp computes kCols output columns, its lanes reading 16-byte vectors
// (16 weights) of each row, so x is loaded (and, for fp8, widened) once for kCols columns and all
// m rows. FP8 products are exact in float32 and summed in float32; int8 products are summed
// exactly in int32 by dp4a. The epilogue multiplies and adds with __fmul_rn / __fadd_rn so that
// nvcc cannot contract them into one FMA: the op contract rounds after the multiply, as the CPU
// emulation does.
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "gemm/quant_gemm_cuda.h"
#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

constexpr int kBytesPerLoad = 16;
constexpr int kCols = 4;   // output columns per warp; n % 16 == 0 makes every block full
constexpr int kWarps = 4;  // warps per block: 16 columns

// 16 float8_e4m3fn values -> float32, exactly, in integer and float ops instead of conversion
// instructions (a quarter of the ALU rate): the sign and the 7 exponent/mantissa bits shifted
// into a float's bits give value * 2^-120 for normals and subnormals alike (the fp8 subnormal
// lands on a float denormal), and one multiply by 2^120 is exact. Needs denormals kept (no
// --use_fast_math). The NaN code 0x7f becomes 480: activations are NaN only if the model is.
__device__ __forceinline__ void fp8x16_to_float(const uint4& v, float (&f)[16]) {
    const float k2pow120 = __uint_as_float((127u + 120u) << 23);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const uint32_t byte = words[i] >> (8 * b);
            const uint32_t bits = ((byte & 0x80u) << 24) | ((byte & 0x7fu) << 20);
            f[4 * i + b] = __uint_as_float(bits) * k2pow120;
        }
    }
}

__device__ __forceinline__ void dot16_int8(const uint4& a, const uint4& b, int& acc) {
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

// Acc float: fp8 inputs; Acc int: int8 inputs. Columns j0 .. j0 + kCols - 1 of y[M, n].
template <class Acc, class TY, int M>
__global__ void quant_gemv_kernel(const uint8_t* __restrict__ x, const uint8_t* __restrict__ w,
                                  const TY* __restrict__ bias, TY* __restrict__ y, int n, int k, float alpha,
                                  const float* __restrict__ alpha_per_n) {
    constexpr int V = kBytesPerLoad;
    constexpr bool kFp8 = std::is_same_v<Acc, float>;
    const int j0 = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * kCols;
    if (j0 >= n) return;  // n % kCols == 0: the warp's columns all exist
    const int lane = threadIdx.x % 32;
    Acc acc[M][kCols];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[mi][c] = 0;
    }
    for (int x0 = lane * V; x0 < k; x0 += 32 * V) {
        uint4 wv[kCols];
#pragma unroll
        for (int c = 0; c < kCols; ++c) wv[c] = load16(w + int64_t{j0 + c} * k + x0);
#pragma unroll
        for (int mi = 0; mi < M; ++mi) {
            const uint4 xv = load16(x + int64_t{mi} * k + x0);
            if constexpr (kFp8) {
                float xf[V], wf[V];
                fp8x16_to_float(xv, xf);
#pragma unroll
                for (int c = 0; c < kCols; ++c) {
                    fp8x16_to_float(wv[c], wf);
#pragma unroll
                    for (int i = 0; i < V; ++i) acc[mi][c] += wf[i] * xf[i];  // exact products
                }
            } else {
#pragma unroll
                for (int c = 0; c < kCols; ++c) dot16_int8(wv[c], xv, acc[mi][c]);
            }
        }
    }
#pragma unroll
    for (int mi = 0; mi < M; ++mi) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[mi][c] = warp_sum_acc(acc[mi][c]);
    }
    if (lane == 0) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
            const int j = j0 + c;
#pragma unroll
            for (int mi = 0; mi < M; ++mi) {
                float v = epilogue(acc[mi][c], alpha, alpha_per_n, j);
                if (bias != nullptr) v = __fadd_rn(v, cuda::to_float(bias[j]));
                y[int64_t{mi} * n + j] = cuda::from_float<TY>(v);
            }
        }
    }
}

// Four columns per warp share each x load and its widening: the fp8 GEMV is bound by those
// integer ops, not by loads in flight (one column per warp with four loads in flight, 4x the
// warps, measured slower on cold weights: 19.0 vs 15.2 us for the 8B qkv_proj, 62.4 vs 47.3 for
// gate_up).
template <class Acc, class TY>
void launch_quant_gemv(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n, int64_t k,
                       const GemmScales& s, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((n + kWarps * kCols - 1) / (kWarps * kCols)));
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

// The quantized GEMV on the tensor cores (m <= 8: x's rows are the 8 columns of
// mma.m16n8k32's B). A block of kTcWarps warps takes 16 rows of w; its warps split k into
// contiguous runs of 128-k steps. Per step each lane loads 32 contiguous bytes of rows g and
// g + 8 (the 4 lanes of group g: 128 contiguous bytes of a row) and of x row g, and feeds them
// to 4 mmas (2 steps' loads in flight): the same permutation of k in w and x, which changes
// only the summation order (unspecified for fp8, exact for int8). On sm_90 the s8 mma is native
// (IMMA); the e4m3 one is not (it is Ada's): nvcc lowers it to e4m3 -> f16 conversions and f16
// HMMAs, exact products either way, still far fewer instructions than widening to float32 for
// FMAs. Each step's sums go to float32 registers (a fresh accumulator per step), so the float32
// accumulation does not depend on how a given GPU's fp8 MMA keeps its partial sums. The warps'
// partial sums are added in warp order: the result does not vary from run to run. Needs sm_89
// (fp8) / sm_80 (int8): launch_quant_gemv_tc's callers check (quant_gemv_tc_supported).
constexpr int kTcWarps = 8;
constexpr int kTcStepK = 128;
constexpr int kTcStepsInFlight = 2;  // steps whose loads a warp issues before its mmas: 4 KB in flight

template <class Acc>
__device__ __forceinline__ void mma_k32(Acc (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
    if constexpr (std::is_same_v<Acc, float>) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
        __trap();  // the host does not launch it below sm_89
#endif
    } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
        __trap();
#endif
    }
}

// Whether this process's GPU runs the tensor-core GEMV for fp8 (sm_89+) / int8 (sm_80+) inputs.
// TRTLLM_QGEMV_TC=0 keeps the CUDA-core kernel (for the A/B; to be removed with it).
bool quant_gemv_tc_supported(bool int8) {
    static const int arch = [] {
        const char* env = std::getenv("TRTLLM_QGEMV_TC");
        if (env != nullptr && std::string(env) == "0") return 0;
        int device = 0, major = 0, minor = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        CHECK_CUDA(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
        return major * 10 + minor;
    }();
    return arch >= (int8 ? 80 : 89);
}

template <class Acc, class TY>
__global__ void __launch_bounds__(kTcWarps * 32)
    quant_gemv_tc_kernel(const uint8_t* __restrict__ x, const uint8_t* __restrict__ w, const TY* __restrict__ bias,
                         TY* __restrict__ y, int m, int n, int k, float alpha, const float* __restrict__ alpha_per_n) {
    __shared__ Acc partial[kTcWarps][32][4];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = blockIdx.x * 16;
    const uint8_t* w_lo = w + int64_t{row0 + g} * k;  // rows g and g + 8 of the block's 16
    const uint8_t* w_hi = w_lo + int64_t{8} * k;
    const uint8_t* x_row = g < m ? x + int64_t{g} * k : nullptr;
    const int steps = (k + kTcStepK - 1) / kTcStepK, per_warp = (steps + kTcWarps - 1) / kTcWarps;
    const int s0 = warp * per_warp, s1 = min(steps, s0 + per_warp);
    Acc acc[4] = {};
    for (int s = s0; s < s1; s += kTcStepsInFlight) {
        uint4 lo[kTcStepsInFlight][2], hi[kTcStepsInFlight][2], xv[kTcStepsInFlight][2];  // [u][h]: bytes kb + 16 h
#pragma unroll
        for (int u = 0; u < kTcStepsInFlight; ++u) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int kb = (s + u) * kTcStepK + 32 * t + 16 * h;
                const bool in = s + u < s1 && kb < k;  // k % 16 == 0: a 16-byte piece is in or out whole
                lo[u][h] = in ? load16(w_lo + kb) : uint4{};
                hi[u][h] = in ? load16(w_hi + kb) : uint4{};
                xv[u][h] = in && x_row != nullptr ? load16(x_row + kb) : uint4{};
            }
        }
#pragma unroll
        for (int u = 0; u < kTcStepsInFlight; ++u) {
            Acc step[4] = {};
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                mma_k32(step, lo[u][h].x, hi[u][h].x, lo[u][h].y, hi[u][h].y, xv[u][h].x, xv[u][h].y);  // bytes 0-7
                mma_k32(step, lo[u][h].z, hi[u][h].z, lo[u][h].w, hi[u][h].w, xv[u][h].z, xv[u][h].w);  // bytes 8-15
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[i] += step[i];
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][lane][i] = acc[i];
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // d[i]: row g (+ 8 for i >= 2) of the block, x row 2 t + (i & 1)
        Acc sum = partial[0][lane][i];
        for (int v = 1; v < kTcWarps; ++v) sum += partial[v][lane][i];
        const int j = row0 + g + (i >= 2 ? 8 : 0), mi = 2 * t + (i & 1);
        if (mi >= m) continue;
        float out = epilogue(sum, alpha, alpha_per_n, j);
        if (bias != nullptr) out = __fadd_rn(out, cuda::to_float(bias[j]));
        y[int64_t{mi} * n + j] = cuda::from_float<TY>(out);
    }
}

template <class Acc, class TY>
void launch_quant_gemv_tc(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n, int64_t k,
                          const GemmScales& s, cudaStream_t stream) {
    quant_gemv_tc_kernel<Acc, TY><<<static_cast<unsigned>(n / 16), kTcWarps * 32, 0, stream>>>(
                 static_cast<const uint8_t*>(x), static_cast<const uint8_t*>(w), static_cast<const TY*>(bias),
                 static_cast<TY*>(y), static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), s.alpha,
                 s.alpha_per_n);
    CHECK_LAUNCH("quant_gemv_tc_kernel");
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
        const bool tc = quant_gemv_tc_supported(int8);
        if (int8) {
            if (tc) launch_quant_gemv_tc<int, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
            else launch_quant_gemv<int, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
        } else {
            if (tc) launch_quant_gemv_tc<float, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
            else launch_quant_gemv<float, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
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
