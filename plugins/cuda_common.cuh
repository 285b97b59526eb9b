// Device helpers shared by the CUDA kernels in plugins/: float conversion of the activation
// types (round to nearest even, as the CPU reference), 16-byte vector loads, block reductions
// and the dtype dispatch. Internal to the CUDA kernels; the op contracts live in each family's header.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "trtllm/cuda_utils.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// Elements of T in one 16-byte vector.
template <class T> constexpr int kVec = 16 / sizeof(T);

template <class T>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[kVec<T>]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) f[i] = to_float(e[i]);
}

template <class T>
__device__ __forceinline__ void store_vec(T* p, const float (&f)[kVec<T>]) {
    uint4 u;
    T* e = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) e[i] = from_float<T>(f[i]);
    *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();  // partial[] may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// Programmatic dependent launch (Hopper): a kernel started by `launch` below may become resident
// while the previous kernel of the stream is still finishing, which hides most of the gap between
// the small dependent kernels of a decode step (~9 per layer). The contract for such a kernel:
// pdl_wait() before it reads anything an earlier kernel wrote and before it writes anything at all
// (only constant data, the weights, may be touched before: prefetched into L2); every block calls
// it, so the kernel cannot finish before its predecessor (what makes the chain transitive).
// pdl_launch_dependents() lets the next kernel launch once all of this kernel's blocks are
// resident; it orders nothing (the next kernel's pdl_wait waits for this one to complete).
// Both are no-ops in a kernel launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Both at the top of a kernel that has nothing to prefetch.
__device__ __forceinline__ void pdl_start() {
    pdl_launch_dependents();
    pdl_wait();
}

// A GEMV warp's weights to bring into L2 before its pdl_wait: while the kernels before it run
// (attention and norms at batch 1 leave DRAM mostly idle), the first bytes of its rows stream in.
// Every resident warp (up to 64 per SM) does so: 4 KB each stays within the 50 MB L2 of an H100.
constexpr int kPrefetchBytesPerWarp = 4096;

// Brings [p, p + bytes) of read-only data into L2: one 128-byte line per lane and step.
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes, int lane) {
    for (int64_t off = int64_t{lane} * 128; off < bytes; off += 32 * 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(p) + off));
    }
}

// Whether kernels launch with programmatic dependent launch: on compute capability >= 9.0, unless
// TRTLLM_PDL=0 (for measuring it against the plain launch, and as a way out should a driver
// misbehave). Decided once per process (one GPU per process).
inline bool pdl_enabled() {
    static const bool enabled = [] {
        const char* env = std::getenv("TRTLLM_PDL");
        if (env != nullptr && std::string(env) == "0") return false;
        int device = 0, major = 0;
        if (cudaGetDevice(&device) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
            cudaGetLastError();  // not this launch's error
            return false;
        }
        return major >= 9;
    }();
    return enabled;
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic dependent launch where enabled.
// Only for kernels that keep the contract above.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    CHECK_CUDA(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// Where build-time tactics are timed: copies of one weight laid end to end, each call on the next,
// so that every call reads its weights from DRAM as a model's layers do. One weight timed over and
// over is served from the L2 (50 MB on an H100) when it fits, which favoured the wrong tactic: at
// batch 1, cuBLASLt's split-K kernels over our GEMV for the 8B o_proj and down_proj (measured on
// cold weights with Nsight Compute: 19.0 vs 15.7 us and 47.3 vs 43.2 us).
class ColdWeights {
public:
    explicit ColdWeights(size_t weight_bytes) : stride_((weight_bytes + 255) / 256 * 256) {
        int device = 0, l2 = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
        // A copy comes round again after at least twice the L2 of other bytes.
        copies_ = static_cast<int>((2 * static_cast<size_t>(l2) + stride_ - 1) / stride_) + 1;
    }
    size_t bytes() const { return stride_ * static_cast<size_t>(copies_); }
    int copies() const { return copies_; }
    // Call i's weight, in a buffer of bytes() holding the copies.
    template <class T>
    T* at(T* base, int i) const {
        return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(base) + static_cast<size_t>(i % copies_) * stride_);
    }

private:
    size_t stride_;
    int copies_ = 1;
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline unsigned blocks_for(int64_t n, int threads) {
    const int64_t b = (n + threads - 1) / threads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 30) ? (1 << 30) : b));
}

}  // namespace trtllm::kernels::cuda

// Runs the statement with `T` bound to the device type of a float activation dtype.
#define TRTLLM_DISPATCH_FLOAT(dtype, T, ...)                                                            \
    switch (dtype) {                                                                                    \
        case ::trtllm::DType::kFloat32: { using T = float; __VA_ARGS__; break; }                        \
        case ::trtllm::DType::kBFloat16: { using T = __nv_bfloat16; __VA_ARGS__; break; }               \
        case ::trtllm::DType::kFloat16: { using T = __half; __VA_ARGS__; break; }                       \
        default:                                                                                        \
            throw std::invalid_argument(std::string("not a float activation dtype: ") +                 \
                                        ::trtllm::dtype_name(dtype));                                   \
    }
