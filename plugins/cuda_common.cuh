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
    // Call i's weight, in a buffer of bytes() holding the copies.
    template <class T>
    T* at(T* base, int i) const {
        return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(base) + static_cast<size_t>(i % copies_) * stride_);
    }

private:
    size_t stride_;
    int copies_ = 1;
};

// Asks the L2 for the 128-byte line holding p, returning at once (a hint: a later load of it may hit).
__device__ __forceinline__ void prefetch_l2_line(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// --- Programmatic dependent launch (sm_90) --------------------------------------------------------
// A batch-1 decode step is ~300 kernels of a few microseconds; each used to wait, idle, for the
// one before to finish before its blocks were even placed. The decode path's kernels are launched
// so that their blocks may start while the kernel before them in the stream still runs:
// - The GEMVs (weight-only mma tiles, the fp8 / int8 tensor-core GEMV) load their first steps'
//   weights (which no kernel writes) before `wait_for_prior_kernels`; the bf16 GEMV only waits
//   (loads before the wait cost it 20 registers and gained nothing, session 23). All release the
//   next kernel after their main loop, while their warps' sums are added.
// - The vectorized row norm loads its weights first; the other norm kernel, SiLU·mul and
//   `quantize` only wait. They release the next kernel as they begin: a GEMV after them places its
//   blocks at once. Where a GEMV follows (at most 128 rows: the int4 tile GEMV of a short prompt)
//   they are about one wave; past that cuBLASLt follows, which is not launched early, so the
//   release does nothing there.
// - The peer all-reduce + residual + norm (tensor parallelism) loads its norm weights first and
//   releases the next kernel as it begins (TP=2 8B decode on 2 H200s 330.5 -> 340.5 tok/s, session 20).
// - The decode attention is launched in stream order (it releases the GEMV after it as it
//   begins). Launched early too, it made the int4_awq step slower: 2.440 vs 2.352 ms (session 19).
// After the wait a kernel may read and write activations: the wait returns once the kernel before
// has finished and its writes are visible, and that kernel finished only after its own wait (or,
// launched in plain stream order, began after everything earlier had), so every earlier kernel has
// too. Every thread that touches an activation waits first, and every such kernel has at least one
// thread that waits. A kernel that does not release the next lets it start as it exits.
// (Sessions 4, 6 and 10 launched every kernel early and released the next right after each wait:
// no gain or a loss; blocks of the next kernel waiting on SM slots a multi-wave GEMV's later waves
// needed. Here a GEMV releases only after its main loop.) TRTLLM_PDL=0 turns it off (plain stream
// order).
__device__ __forceinline__ void wait_for_prior_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void let_next_kernel_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// A GEMV warp's run of steps s0, s0 + stride, ... < s1, launched early: the first step's weights
// load (`load_weights(s)`) before the wait for the kernel before, then each step (`step_from(s)`:
// its x, its math) follows its weights; after the run the next kernel may start, while the GEMV's
// warps' sums are added. The first step is peeled off the loop: weight registers carried into it
// cost the GEMVs 6-16 registers.
template <class LoadWeights, class StepFrom>
__device__ __forceinline__ void gemv_steps_after_prior(int s0, int s1, int stride, LoadWeights&& load_weights,
                                                       StepFrom&& step_from) {
    load_weights(s0);
    wait_for_prior_kernels();
    if (s0 < s1) step_from(s0);
    for (int s = s0 + stride; s < s1; s += stride) {
        load_weights(s);
        step_from(s);
    }
    let_next_kernel_start();
}

// The virtual architecture the kernels were compiled for (all with the same flags): code built from
// compute_80 PTX and JIT-compiled on a Hopper has no griddepcontrol (nor cluster code), though the
// device has them, so it is the PTX version that decides, not the device or the binary's version.
template <int>
__global__ void arch_probe_kernel() {}

inline int kernels_ptx_version() {
    static const int version = [] {
        cudaFuncAttributes attributes = {};
        CHECK_CUDA(cudaFuncGetAttributes(&attributes, arch_probe_kernel<0>));
        return attributes.ptxVersion;
    }();
    return version;
}

// The GPU's SMs, asked once (one GPU per process, as programmatic_launch_enabled assumes).
inline int current_device_sms() {
    static const int sms = [] {
        int device = 0, count = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
        return count;
    }();
    return sms;
}

inline bool programmatic_launch_enabled() {
    static const bool on = [] {
        const char* v = std::getenv("TRTLLM_PDL");
        if (v != nullptr && std::string(v) == "0") return false;
        int device = 0, major = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        return major >= 9 && kernels_ptx_version() >= 90;
    }();
    return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch where enabled:
// only for kernels that call wait_for_prior_kernels() before touching activations, and whose
// activation pointers are not __restrict__ (a __restrict__ const pointer may be read through the
// non-coherent path, ld.global.nc, which ptxas may move above the wait).
template <class... Params, class... Args>
void launch_after_prior(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = programmatic_launch_enabled() ? 1 : 0;
    check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
}

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
