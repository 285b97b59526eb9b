// Row gathers on the GPU: embedding is gather_rows over the table. One block per output row,
// 16-byte copies when the row size and pointers allow.
#include "cuda_common.cuh"
#include "embedding/embedding_cuda.h"

namespace trtllm::kernels {
namespace {

template <class V>
__global__ void gather_rows_kernel(const V* x, const int32_t* rows, V* y, int64_t row_elems) {
    const int64_t src = rows[blockIdx.x];
    const V* in = x + src * row_elems;
    V* out = y + int64_t{blockIdx.x} * row_elems;
    for (int64_t i = threadIdx.x; i < row_elems; i += blockDim.x) out[i] = in[i];
}

}  // namespace

void gather_rows_cuda(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes,
                      cudaStream_t stream) {
    if (num_rows <= 0 || row_bytes <= 0) return;
    const auto grid = static_cast<unsigned>(num_rows);
    if (row_bytes % 16 == 0 && cuda::aligned16(x) && cuda::aligned16(y)) {
        gather_rows_kernel<uint4><<<grid, 128, 0, stream>>>(static_cast<const uint4*>(x), rows, static_cast<uint4*>(y),
                                                             row_bytes / 16);
    } else if (row_bytes % 4 == 0) {
        gather_rows_kernel<uint32_t><<<grid, 128, 0, stream>>>(static_cast<const uint32_t*>(x), rows,
                                                                static_cast<uint32_t*>(y), row_bytes / 4);
    } else {
        gather_rows_kernel<uint8_t><<<grid, 128, 0, stream>>>(static_cast<const uint8_t*>(x), rows,
                                                               static_cast<uint8_t*>(y), row_bytes);
    }
    CHECK_LAUNCH("gather_rows_kernel");
}

void embedding_cuda(const int32_t* ids, const void* table, void* y, DType dtype, int64_t num_tokens, int64_t hidden,
                    cudaStream_t stream) {
    gather_rows_cuda(table, ids, y, num_tokens, hidden * static_cast<int64_t>(dtype_size(dtype)), stream);
}

}  // namespace trtllm::kernels
