// CUDA elementwise ops: float32 math, one rounding per output. 16-byte vectors where the sizes
// and pointers allow (the arena is 256-byte aligned), scalars otherwise.
#include "cuda_common.cuh"
#include "elementwise/elementwise_cuda.h"
#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

using namespace cuda;
constexpr int kThreads = 256;

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu_tanh_f(float x) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

template <class T, bool kVector>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    if constexpr (kVector) {
        constexpr int V = kVec<T>;
        for (int64_t i = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * V; i < n; i += stride * V) {
            float fa[V], fb[V];
            load_vec(a + i, fa);
            load_vec(b + i, fb);
#pragma unroll
            for (int j = 0; j < V; ++j) fa[j] += fb[j];
            store_vec(y + i, fa);
        }
    } else {
        for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
            y[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
        }
    }
}

template <class T, bool kVector>
__global__ void gelu_kernel(const T* x, T* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    if constexpr (kVector) {
        constexpr int V = kVec<T>;
        for (int64_t i = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * V; i < n; i += stride * V) {
            float f[V];
            load_vec(x + i, f);
#pragma unroll
            for (int j = 0; j < V; ++j) f[j] = gelu_tanh_f(f[j]);
            store_vec(y + i, f);
        }
    } else {
        for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
            y[i] = from_float<T>(gelu_tanh_f(to_float(x[i])));
        }
    }
}

// One element (or vector) of y [rows, inter] per thread step; gate x[:, :inter], up x[:, inter:].
template <class T, bool kVector>
__global__ void silu_mul_kernel(const T* x, T* y, int64_t rows, int64_t inter) {
    let_next_kernel_start();  // a GEMV may follow: its blocks load their weights meanwhile
    wait_for_prior_kernels();  // launched early (launch_after_prior): x is the kernel before's
    const int64_t n = rows * inter, stride = int64_t{gridDim.x} * blockDim.x;
    constexpr int V = kVector ? kVec<T> : 1;
    for (int64_t i = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * V; i < n; i += stride * V) {
        const int64_t r = i / inter, c = i % inter;
        const T* gate = x + r * 2 * inter + c;
        if constexpr (kVector) {
            float g[V], u[V];
            load_vec(gate, g);
            load_vec(gate + inter, u);
#pragma unroll
            for (int j = 0; j < V; ++j) g[j] = silu(g[j]) * u[j];
            store_vec(y + i, g);
        } else {
            y[i] = from_float<T>(silu(to_float(gate[0])) * to_float(gate[inter]));
        }
    }
}

// Quantized outputs (op set v2): the same float32 math as the kernels above, one element per
// thread step, stored through `store` (Q(v, out_scale[col])).
template <class T, class Store>
__global__ void silu_mul_quant_kernel(const T* x, Store store, int64_t rows, int64_t inter) {
    let_next_kernel_start();  // a GEMV may follow: its blocks load their weights meanwhile
    wait_for_prior_kernels();  // launched early (launch_after_prior): x is the kernel before's
    const int64_t n = rows * inter, stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t r = i / inter, c = i % inter;
        const T* gate = x + r * 2 * inter + c;
        store(i, c, silu(to_float(gate[0])) * to_float(gate[inter]));
    }
}

template <class T, class Store>
__global__ void gelu_quant_kernel(const T* x, Store store, int64_t n, int64_t cols) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
        store(i, i % cols, gelu_tanh_f(to_float(x[i])));
    }
}

template <class T>
__global__ void add_bias_kernel(T* x, const T* bias, int64_t rows, int64_t n) {
    const int64_t total = rows * n, stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += stride) {
        x[i] = from_float<T>(to_float(x[i]) + to_float(bias[i % n]));
    }
}

}  // namespace

void add_cuda(const void* a, const void* b, void* y, DType dtype, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        const bool vec = n % kVec<T> == 0 && aligned16(a) && aligned16(b) && aligned16(y);
        if (vec) {
            add_kernel<T, true><<<blocks_for(n / kVec<T>, kThreads), kThreads, 0, stream>>>(
                static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n);
        } else {
            add_kernel<T, false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n);
        }
    });
    CHECK_LAUNCH("add_kernel");
}

void gelu_tanh_cuda(const void* x, void* y, DType dtype, int64_t n, cudaStream_t stream, const OutputQuantCuda* quant,
                    int64_t cols) {
    if (quant != nullptr) {
        if (quant->per_channel() && (cols <= 0 || n % cols != 0)) {
            throw std::invalid_argument("gelu_tanh: per-channel quantization needs cols dividing n");
        }
        if (!quant->per_channel()) cols = 1;
        check_output_quant(*quant, cols, "gelu_tanh");
        if (n <= 0) return;
        TRTLLM_DISPATCH_FLOAT(dtype, T, {
            TRTLLM_DISPATCH_STORE(T, quant, y, {
                gelu_quant_kernel<T, Store><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x),
                                                                                           store, n, cols);
            });
        });
        CHECK_LAUNCH("gelu_quant_kernel");
        return;
    }
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        if (n % kVec<T> == 0 && aligned16(x) && aligned16(y)) {
            gelu_kernel<T, true><<<blocks_for(n / kVec<T>, kThreads), kThreads, 0, stream>>>(
                static_cast<const T*>(x), static_cast<T*>(y), n);
        } else {
            gelu_kernel<T, false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x),
                                                                                 static_cast<T*>(y), n);
        }
    });
    CHECK_LAUNCH("gelu_kernel");
}

void silu_mul_cuda(const void* x, void* y, DType dtype, int64_t rows, int64_t inter, cudaStream_t stream,
                   const OutputQuantCuda* quant) {
    if (quant != nullptr) check_output_quant(*quant, inter, "silu_mul");
    if (rows <= 0 || inter <= 0) return;
    if (quant != nullptr) {
        TRTLLM_DISPATCH_FLOAT(dtype, T, {
            TRTLLM_DISPATCH_STORE(T, quant, y, {
                launch_after_prior("silu_mul_quant_kernel", silu_mul_quant_kernel<T, Store>,
                                   blocks_for(rows * inter, kThreads), kThreads, 0, stream, static_cast<const T*>(x),
                                   store, rows, inter);
            });
        });
        return;
    }
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        if (inter % kVec<T> == 0 && aligned16(x) && aligned16(y)) {
            launch_after_prior("silu_mul_kernel", silu_mul_kernel<T, true>, blocks_for(rows * inter / kVec<T>, kThreads),
                               kThreads, 0, stream, static_cast<const T*>(x), static_cast<T*>(y), rows, inter);
        } else {
            launch_after_prior("silu_mul_kernel", silu_mul_kernel<T, false>, blocks_for(rows * inter, kThreads),
                               kThreads, 0, stream, static_cast<const T*>(x), static_cast<T*>(y), rows, inter);
        }
    });
}

void add_bias_cuda(void* x, const void* bias, DType dtype, int64_t rows, int64_t n, cudaStream_t stream) {
    if (rows <= 0 || n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        add_bias_kernel<T><<<blocks_for(rows * n, kThreads), kThreads, 0, stream>>>(
            static_cast<T*>(x), static_cast<const T*>(bias), rows, n);
    });
    CHECK_LAUNCH("add_bias_kernel");
}

}  // namespace trtllm::kernels
