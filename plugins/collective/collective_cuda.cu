#include "collective/collective_cuda.h"
#include "cuda_common.cuh"

namespace trtllm::kernels {
namespace {

using namespace cuda;
constexpr int kThreads = 256;

// One thread per output unit (U: 1 to 16 bytes, a whole number of units per shard row).
template <class U>
__global__ void concat_shards_kernel(const U* gathered, U* out, int64_t rows, int64_t shard_units, int tp) {
    const int64_t row_units = shard_units * tp, total = rows * row_units;
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t row = i / row_units, col = i % row_units;
        const int64_t rank = col / shard_units, c = col % shard_units;
        out[i] = gathered[(rank * rows + row) * shard_units + c];
    }
}

template <class U>
void launch_concat(const void* gathered, void* out, int64_t rows, int64_t shard_units, int tp, cudaStream_t stream) {
    concat_shards_kernel<U><<<blocks_for(rows * shard_units * tp, kThreads), kThreads, 0, stream>>>(
        static_cast<const U*>(gathered), static_cast<U*>(out), rows, shard_units, tp);
}

template <class T>
__global__ void widen_kernel(const T* x, float* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = to_float(x[i]);
}

template <class T>
__global__ void narrow_kernel(const float* x, T* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = from_float<T>(x[i]);
}

}  // namespace

void concat_shards_cuda(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp,
                        cudaStream_t stream) {
    if (rows <= 0 || shard_cols <= 0 || tp <= 0) return;
    // The widest unit that divides a shard row and both pointers' alignment: 16-byte moves for
    // the float32 logits shards.
    const uint64_t row_bytes = static_cast<uint64_t>(shard_cols) * elem_bytes;
    const uint64_t bits = row_bytes | reinterpret_cast<uintptr_t>(gathered) | reinterpret_cast<uintptr_t>(out);
    const auto units = [&](int64_t unit_bytes) { return static_cast<int64_t>(row_bytes) / unit_bytes; };
    if (bits % 16 == 0) {
        launch_concat<uint4>(gathered, out, rows, units(16), tp, stream);
    } else if (bits % 8 == 0) {
        launch_concat<uint2>(gathered, out, rows, units(8), tp, stream);
    } else if (bits % 4 == 0) {
        launch_concat<uint32_t>(gathered, out, rows, units(4), tp, stream);
    } else if (bits % 2 == 0) {
        launch_concat<uint16_t>(gathered, out, rows, units(2), tp, stream);
    } else {
        launch_concat<uint8_t>(gathered, out, rows, units(1), tp, stream);
    }
    CHECK_LAUNCH("concat_shards_kernel");
}

void widen_to_float_cuda(const void* x, DType dtype, float* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        widen_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x), y, n);
    });
    CHECK_LAUNCH("widen_kernel");
}

void narrow_from_float_cuda(const float* x, void* y, DType dtype, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        narrow_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, static_cast<T*>(y), n);
    });
    CHECK_LAUNCH("narrow_kernel");
}

}  // namespace trtllm::kernels
