// Row gathers on the GPU: embedding is gather_rows over the table. One block per output row,
// 16-byte copies when the row size and pointers allow.
#include "cuda_common.cuh"
#include "embedding/embedding_cuda.h"

namespace trtllm::kernels {
namespace {

template <class V>
__global__ void gather_rows_kernel(const V* x, const int32_t* rows, V* y, int64_t row_elems) {
    cuda::wait_for_prior_kernels();
    const int64_t src = rows[blockIdx.x];
    const V* in = x + src * row_elems;
    V* out = y + int64_t{blockIdx.x} * row_elems;
    for (int64_t i = threadIdx.x; i < row_elems; i += blockDim.x) out[i] = in[i];
}

template <class V>
void launch_gather(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes, cudaStream_t stream) {
    cuda::launch("gather_rows_kernel", gather_rows_kernel<V>, static_cast<unsigned>(num_rows), 128, 0, stream,
                 static_cast<const V*>(x), rows, static_cast<V*>(y), row_bytes / static_cast<int64_t>(sizeof(V)));
}

}  // namespace

void gather_rows_cuda(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes,
                      cudaStream_t stream) {
    if (num_rows <= 0 || row_bytes <= 0) return;
    if (row_bytes % 16 == 0 && cuda::aligned16(x) && cuda::aligned16(y)) {
        launch_gather<uint4>(x, rows, y, num_rows, row_bytes, stream);
    } else if (row_bytes % 4 == 0) {
        launch_gather<uint32_t>(x, rows, y, num_rows, row_bytes, stream);
    } else {
        launch_gather<uint8_t>(x, rows, y, num_rows, row_bytes, stream);
    }
}

void embedding_cuda(const int32_t* ids, const void* table, void* y, DType dtype, int64_t num_tokens, int64_t hidden,
                    cudaStream_t stream) {
    gather_rows_cuda(table, ids, y, num_tokens, hidden * static_cast<int64_t>(dtype_size(dtype)), stream);
}

}  // namespace trtllm::kernels
