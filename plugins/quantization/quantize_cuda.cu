// CUDA `quantize`: one element per thread step (grid-stride), coalesced loads and byte stores.
#include <string>

#include "quantization/quantize_cuda.cuh"

namespace trtllm::kernels {
namespace {

template <class T, class Store>
__global__ void quantize_kernel(const T* x, Store store, int64_t n, int64_t cols) {
    cuda::let_next_kernel_start();  // a GEMV may follow: its blocks load their weights meanwhile
    cuda::wait_for_prior_kernels();  // launched early (launch_after_prior): x is the kernel before's
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
        store(i, i % cols, cuda::to_float(x[i]));
    }
}

}  // namespace

void check_output_quant(const OutputQuantCuda& q, int64_t cols, const char* op) {
    if (q.dtype != DType::kFloat8E4M3 && q.dtype != DType::kInt8) {
        throw std::invalid_argument(std::string(op) + ": quantized outputs are float8_e4m3fn or int8, got " +
                                    dtype_name(q.dtype));
    }
    if (q.inv_scale == nullptr || (q.num_scales != 1 && q.num_scales != cols)) {
        throw std::invalid_argument(std::string(op) + ": " + std::to_string(q.num_scales) + " output scales for " +
                                    std::to_string(cols) + " columns (need 1 or one per column)");
    }
}

void quantize_cuda(const void* x, DType x_dtype, void* y, const OutputQuantCuda& q, int64_t rows, int64_t cols,
                   cudaStream_t stream) {
    if (rows < 0 || cols < 0) throw std::invalid_argument("quantize: negative shape");
    check_output_quant(q, cols, "quantize");
    const int64_t n = rows * cols;
    if (n == 0) return;
    constexpr int kThreads = 256;
    const OutputQuantCuda* quant = &q;
    TRTLLM_DISPATCH_FLOAT(x_dtype, T, {
        TRTLLM_DISPATCH_STORE(T, quant, y, {
            cuda::launch_after_prior("quantize_kernel", quantize_kernel<T, Store>, cuda::blocks_for(n, kThreads), kThreads,
                                     0, stream, static_cast<const T*>(x), store, n, cols);
        });
    });
}

}  // namespace trtllm::kernels
