// Quantized GEMV (decode: m <= 4) on the tensor cores and the int8 epilogue. The epilogue
// multiplies and adds with __fmul_rn / __fadd_rn so that nvcc cannot contract them into one FMA:
// the op contract rounds after the multiply, as the CPU emulation does.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "gemm/quant_gemm_cuda.h"
#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

__device__ __forceinline__ uint4 load16(const uint8_t* p) { return *reinterpret_cast<const uint4*>(p); }

// The op's epilogue on one accumulator: fp8 fl(acc · alpha), int8 fl(float(acc) · alpha[j]); + bias.
__device__ __forceinline__ float epilogue(float acc, float alpha, const float* /*alpha_per_n*/, int /*j*/) {
    return __fmul_rn(acc, alpha);
}
__device__ __forceinline__ float epilogue(int acc, float /*alpha*/, const float* alpha_per_n, int j) {
    return __fmul_rn(__int2float_rn(acc), alpha_per_n[j]);
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
// (fp8) / sm_80 (int8): quant_gemv_supported. On cold weights (Nsight Compute, 8B layer shapes,
// m = 1) it took fp8 qkv 11.6 / o 9.0 / gate_up 42.6 / down 25.5 us, 88.7 per layer (2.46 TB/s),
// where the CUDA-core kernel it replaced (four columns per warp, fp8 widened to float32 for FMAs)
// took 14.4 / 12.3 / 50.3 / 33.7 = 110.7.
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

// The weights load with __ldcs (evict-first: each byte is read once). Its asm is volatile, so the
// first steps' loads stay above the wait for the kernel before; plain loads were issued after it.
// fp8 8B decode step 3.606 -> 3.417 ms (session 20). MIN_BLOCKS, the blocks an SM the registers
// are bounded for: see launch_quant_gemv_tc.
template <class Acc, class TY, int MIN_BLOCKS>
__global__ void __launch_bounds__(kTcWarps * 32, MIN_BLOCKS)
    quant_gemv_tc_kernel(const uint8_t* x, const uint8_t* __restrict__ w, const TY* __restrict__ bias,
                         TY* __restrict__ y, int m, int n, int k, float alpha, const float* __restrict__ alpha_per_n) {
    __shared__ Acc partial[kTcWarps][32][4];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = blockIdx.x * 16;
    const uint8_t* w_lo = w + int64_t{row0 + g} * k;  // rows g and g + 8 of the block's 16
    const uint8_t* w_hi = w_lo + int64_t{8} * k;
    const uint8_t* x_row = g < m ? x + int64_t{g} * k : nullptr;
    const int steps = (k + kTcStepK - 1) / kTcStepK, per_warp = (steps + kTcWarps - 1) / kTcWarps;
    const int s0 = warp * per_warp, s1 = min(steps, s0 + per_warp);
    uint4 lo[kTcStepsInFlight][2], hi[kTcStepsInFlight][2];  // [u][h]: bytes kb + 16 h
    auto load_weights = [&](int s) {
#pragma unroll
        for (int u = 0; u < kTcStepsInFlight; ++u) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int kb = (s + u) * kTcStepK + 32 * t + 16 * h;
                const bool in = s + u < s1 && kb < k;  // k % 16 == 0: a 16-byte piece is in or out whole
                lo[u][h] = in ? __ldcs(reinterpret_cast<const uint4*>(w_lo + kb)) : uint4{};
                hi[u][h] = in ? __ldcs(reinterpret_cast<const uint4*>(w_hi + kb)) : uint4{};
            }
        }
    };
    Acc acc[4] = {};
    auto step_from = [&](int s) {  // the steps from s, their weights loaded
        uint4 xv[kTcStepsInFlight][2];
#pragma unroll
        for (int u = 0; u < kTcStepsInFlight; ++u) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int kb = (s + u) * kTcStepK + 32 * t + 16 * h;
                const bool in = s + u < s1 && kb < k;
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
    };
    cuda::gemv_steps_after_prior(s0, s1, kTcStepsInFlight, load_weights, step_from);
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

template <class Acc, class TY, int MIN_BLOCKS>
void launch_quant_gemv_tc_bound(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n,
                                int64_t k, const GemmScales& s, cudaStream_t stream) {
    cuda::launch_after_prior("quant_gemv_tc_kernel", quant_gemv_tc_kernel<Acc, TY, MIN_BLOCKS>,
                             static_cast<unsigned>(n / 16), kTcWarps * 32, 0, stream, static_cast<const uint8_t*>(x),
                             static_cast<const uint8_t*>(w), static_cast<const TY*>(bias), static_cast<TY*>(y),
                             static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), s.alpha, s.alpha_per_n);
}

template <class Acc, class TY>
void launch_quant_gemv_tc(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n, int64_t k,
                          const GemmScales& s, cudaStream_t stream) {
    // Registers bounded so that ptxas issues a chunk's eight weight loads before its first mma: at
    // 4 blocks an SM (64 registers) it issued four after it, at 3 (80) one, at 2 none (SASS). A grid
    // of at most two blocks an SM (the 8B o and down: 256 blocks) never holds more than 2, the
    // others 3. H100, session 22: 8B fp8_lmh decode step 3.449 ms at 4 everywhere, 3.301 with 2 on
    // the small grids, 3.411 with 3 on the large, 3.317 with both; at m = 1 fp8 qkv 9.9 -> 9.6 us and
    // gate_up 41.9 -> 39.9 at 3, o 7.0 -> 6.9 and down 24.0 -> 20.8 at 2.
    if (n / 16 <= 2 * cuda::current_device_sms()) {
        return launch_quant_gemv_tc_bound<Acc, TY, 2>(m, x, w, bias, y, n, k, s, stream);
    }
    launch_quant_gemv_tc_bound<Acc, TY, 3>(m, x, w, bias, y, n, k, s, stream);
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

bool quant_gemv_supported(bool int8) {
    static const int arch = [] {
        int device = 0, major = 0, minor = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        CHECK_CUDA(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
        return major * 10 + minor;
    }();
    return arch >= (int8 ? 80 : 89);
}

void quant_gemv_cuda(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y,
                     const GemmScales& scales, cudaStream_t stream) {
    if (m < 1 || m > kGemvMaxRows) throw std::invalid_argument("quantized GEMV: m = " + std::to_string(m) + " > 4");
    check_quantized_gemm_shape(s);
    const bool int8 = s.x_dtype == DType::kInt8;
    if (int8 && scales.alpha_per_n == nullptr) throw std::invalid_argument("int8 GEMV needs alpha_per_n");
    if (!quant_gemv_supported(int8)) {
        throw std::invalid_argument(std::string("quantized GEMV: ") + (int8 ? "int8 needs sm_80" : "fp8 needs sm_89") +
                                    " or newer");
    }
    TRTLLM_DISPATCH_FLOAT(s.y_dtype, TY, {
        if (int8) launch_quant_gemv_tc<int, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
        else launch_quant_gemv_tc<float, TY>(m, x, w, bias, y, s.n, s.k, scales, stream);
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
