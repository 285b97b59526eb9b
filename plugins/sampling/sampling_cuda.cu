#include <climits>

#include "cuda_common.cuh"
#include "sampling/sampling_cuda.h"

namespace trtllm::kernels {
namespace {

constexpr int kThreads = 1024;

// (value, id) pairs: the larger value wins, then the lower id; ids start at INT_MAX ("none").
__device__ __forceinline__ void keep_better(float& v, int& i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

__global__ void argmax_rows_kernel(const float* logits, int64_t row_stride, int vocab, int32_t* out) {
    const float* row = logits + int64_t{blockIdx.x} * row_stride;
    float best = -INFINITY;
    int best_id = INT_MAX;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (v > best) {  // strict, ids increasing: this thread's lowest id wins its ties; NaN never wins
            best = v;
            best_id = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        keep_better(best, best_id, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, best_id, o));
    }
    __shared__ float vals[32];
    __shared__ int ids[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        vals[warp] = best;
        ids[warp] = best_id;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < blockDim.x / 32 ? vals[lane] : -INFINITY;
        best_id = lane < blockDim.x / 32 ? ids[lane] : INT_MAX;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            keep_better(best, best_id, __shfl_xor_sync(0xffffffffu, best, o),
                        __shfl_xor_sync(0xffffffffu, best_id, o));
        }
        if (lane == 0) out[blockIdx.x] = best_id == INT_MAX ? -1 : best_id;
    }
}

}  // namespace

void argmax_rows_cuda(const float* logits, int64_t rows, int64_t row_stride, int vocab_size, int32_t* out,
                      cudaStream_t stream) {
    if (rows <= 0) return;
    argmax_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, row_stride, vocab_size, out);
    CHECK_LAUNCH("argmax_rows_kernel");
}

}  // namespace trtllm::kernels
