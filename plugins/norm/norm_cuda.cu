// CUDA RMSNorm / LayerNorm (+ residual add): one block per row, float32 sums, one rounding per
// output; rows of up to 1024 16-byte vectors held in registers, one vector per thread. The fused
// add stores round(a + b) first and normalizes the rounded values, as the CPU reference does; each
// thread re-reads only the elements it wrote itself.
#include <string>

#include "cuda_common.cuh"
#include "norm/norm_cuda.h"
#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

using namespace cuda;

int threads_for(int64_t dim) {
    int t = 32;
    while (t < 1024 && t * 4 < dim) t *= 2;
    return t;
}

// kMode: 0 rms, 1 layer norm. a + b (when b != nullptr) is rounded into `sum` first. The
// normalized values go through `normed` (the activation dtype, or quantized).
template <class T, int kMode, class Store>
__global__ void norm_row_kernel(const T* a, const T* b, const T* weight, const T* bias, Store normed, T* sum,
                                int64_t dim, float eps) {
    let_next_kernel_start();  // a GEMV may follow: its blocks load their weights meanwhile
    wait_for_prior_kernels();  // launched early (launch_after_prior): the inputs are the kernel before's
    const int64_t off = int64_t{blockIdx.x} * dim;
    const T* x = a + off;
    if (b != nullptr) {
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            sum[off + i] = from_float<T>(to_float(a[off + i]) + to_float(b[off + i]));
        }
        x = sum + off;  // same thread wrote the elements it reads below
    }
    float mean = 0.0f;
    if constexpr (kMode == 1) {
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += to_float(x[i]);
        mean = block_sum(s) / static_cast<float>(dim);
    }
    float sq = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = to_float(x[i]) - mean;
        sq += v * v;
    }
    const float inv = 1.0f / sqrtf(block_sum(sq) / static_cast<float>(dim) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = (to_float(x[i]) - mean) * inv * to_float(weight[i]);
        if constexpr (kMode == 1) v += to_float(bias[i]);
        normed(off + i, i, v);
    }
}

// The same for rows of at most 1024 16-byte vectors (8192 bf16 elements), 16-byte aligned: one
// vector per thread, kept in registers between the passes, so each input is read once and the
// block is as short as the row allows (a decode step runs 2 of these per layer on one row).
template <class T, int kMode, class Store>
__global__ void norm_row_vec_kernel(const T* a, const T* b, const T* weight, const T* bias, Store normed, T* sum,
                                    int64_t dim, float eps) {
    let_next_kernel_start();  // a GEMV may follow: its blocks load their weights meanwhile
    constexpr int V = kVec<T>;
    const int64_t off = int64_t{blockIdx.x} * dim, c = int64_t{threadIdx.x} * V;
    const bool active = c < dim;
    float x[V] = {}, w[V], bv[V] = {};
    // The weights first: loaded after the reduction they were a second round trip to memory in
    // this one-block kernel's chain; launched early (launch_after_prior), they load while the
    // kernel before finishes. The inputs are that kernel's: after the wait.
    if (active) {
        load_vec(weight + c, w);
        if constexpr (kMode == 1) load_vec(bias + c, bv);
    }
    wait_for_prior_kernels();
    if (active) {
        load_vec(a + off + c, x);
        if (b != nullptr) {
            float y[V];
            load_vec(b + off + c, y);
#pragma unroll
            for (int k = 0; k < V; ++k) x[k] = to_float(from_float<T>(x[k] + y[k]));
            store_vec(sum + off + c, x);  // exact: already rounded to T
        }
    }
    float mean = 0.0f;
    if constexpr (kMode == 1) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < V; ++k) s += x[k];
        mean = block_sum(s) / static_cast<float>(dim);
    }
    float sq = 0.0f;
    if (active) {
#pragma unroll
        for (int k = 0; k < V; ++k) sq += (x[k] - mean) * (x[k] - mean);
    }
    const float inv = 1.0f / sqrtf(block_sum(sq) / static_cast<float>(dim) + eps);
    if (!active) return;
#pragma unroll
    for (int k = 0; k < V; ++k) {
        float v = (x[k] - mean) * inv * w[k];
        if constexpr (kMode == 1) v += bv[k];
        normed(off + c + k, c + k, v);
    }
}

// RMSNorm of chunks smaller than a row (per-head q/k norm): one warp per chunk.
template <class T>
__global__ void rms_norm_chunk_kernel(const T* x, const T* weight, T* y, int64_t num_chunks, int64_t chunk, float eps) {
    const int64_t c = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
    if (c >= num_chunks) return;
    const int lane = threadIdx.x % 32;
    const T* in = x + c * chunk;
    float sq = 0.0f;
    for (int64_t i = lane; i < chunk; i += 32) sq += to_float(in[i]) * to_float(in[i]);
    const float inv = 1.0f / sqrtf(warp_sum(sq) / static_cast<float>(chunk) + eps);
    for (int64_t i = lane; i < chunk; i += 32) y[c * chunk + i] = from_float<T>(to_float(in[i]) * inv * to_float(weight[i]));
}

void check(int64_t rows, int64_t dim) {
    if (rows < 0 || dim <= 0) {
        throw std::invalid_argument("norm: need rows >= 0 and dim > 0, got rows=" + std::to_string(rows) +
                                    " dim=" + std::to_string(dim));
    }
}

template <int kMode>
void launch_row(const void* a, const void* b, const void* w, const void* bias, void* normed, void* sum, DType dtype,
                int64_t rows, int64_t dim, float eps, cudaStream_t stream, const OutputQuantCuda* quant) {
    check(rows, dim);
    if (quant != nullptr) check_output_quant(*quant, dim, "norm");
    if (rows == 0) return;
    const bool aligned = aligned16(a) && aligned16(b) && aligned16(w) && aligned16(bias) && aligned16(sum);
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        const int64_t vectors = dim / kVec<T>;
        if (aligned && dim % kVec<T> == 0 && vectors <= 1024) {
            const auto threads = static_cast<unsigned>((vectors + 31) / 32 * 32);
            TRTLLM_DISPATCH_STORE(T, quant, normed, {
                launch_after_prior("norm_row_vec_kernel", norm_row_vec_kernel<T, kMode, Store>,
                                   static_cast<unsigned>(rows), threads, 0, stream, static_cast<const T*>(a),
                                   static_cast<const T*>(b), static_cast<const T*>(w), static_cast<const T*>(bias),
                                   store, static_cast<T*>(sum), dim, eps);
            });
        } else {
            TRTLLM_DISPATCH_STORE(T, quant, normed, {
                launch_after_prior("norm_row_kernel", norm_row_kernel<T, kMode, Store>, static_cast<unsigned>(rows),
                                   threads_for(dim), 0, stream, static_cast<const T*>(a), static_cast<const T*>(b),
                                   static_cast<const T*>(w), static_cast<const T*>(bias), store,
                                   static_cast<T*>(sum), dim, eps);
            });
        }
    });
}

}  // namespace

void rms_norm_cuda(const void* x, const void* weight, void* y, DType dtype, int64_t rows, int64_t dim, int64_t chunk,
                   float eps, cudaStream_t stream, const OutputQuantCuda* quant) {
    check(rows, dim);
    if (chunk <= 0 || dim % chunk != 0) {
        throw std::invalid_argument("rms_norm: chunk " + std::to_string(chunk) + " must divide dim " + std::to_string(dim));
    }
    if (chunk == dim) {
        launch_row<0>(x, nullptr, weight, nullptr, y, nullptr, dtype, rows, dim, eps, stream, quant);
        return;
    }
    if (quant != nullptr) throw std::invalid_argument("rms_norm: a quantized output needs chunk == dim on CUDA");
    if (rows == 0) return;
    const int64_t num_chunks = rows * (dim / chunk);
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        rms_norm_chunk_kernel<T><<<cuda::blocks_for(num_chunks, 8), 256, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<T*>(y), num_chunks, chunk, eps);
    });
    CHECK_LAUNCH("rms_norm_chunk_kernel");
}

void add_rms_norm_cuda(const void* a, const void* b, const void* weight, void* normed, void* sum, DType dtype,
                       int64_t rows, int64_t dim, float eps, cudaStream_t stream, const OutputQuantCuda* quant) {
    launch_row<0>(a, b, weight, nullptr, normed, sum, dtype, rows, dim, eps, stream, quant);
}

void layer_norm_cuda(const void* x, const void* weight, const void* bias, void* y, DType dtype, int64_t rows,
                     int64_t dim, float eps, cudaStream_t stream, const OutputQuantCuda* quant) {
    launch_row<1>(x, nullptr, weight, bias, y, nullptr, dtype, rows, dim, eps, stream, quant);
}

void add_layer_norm_cuda(const void* a, const void* b, const void* weight, const void* bias, void* normed, void* sum,
                         DType dtype, int64_t rows, int64_t dim, float eps, cudaStream_t stream,
                         const OutputQuantCuda* quant) {
    launch_row<1>(a, b, weight, bias, normed, sum, dtype, rows, dim, eps, stream, quant);
}

}  // namespace trtllm::kernels
