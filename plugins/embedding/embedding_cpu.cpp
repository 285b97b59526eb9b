// CPU embedding lookup and row gather: plain row copies, no conversion.
#include "embedding/embedding.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu_common.h"

namespace trtllm::kernels {

void embedding_cpu(const int32_t* ids, const void* table, void* y, DType dtype, int64_t num_tokens, int64_t hidden) {
    if (num_tokens < 0 || hidden < 0) {
        throw std::invalid_argument("embedding: negative size num_tokens=" + std::to_string(num_tokens) +
                                    " hidden=" + std::to_string(hidden));
    }
    const int64_t row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
    gather_rows_cpu(table, ids, y, num_tokens, row_bytes);
}

void gather_rows_cpu(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes) {
    if (num_rows < 0 || row_bytes < 0) {
        throw std::invalid_argument("gather_rows: negative size num_rows=" + std::to_string(num_rows) +
                                    " row_bytes=" + std::to_string(row_bytes));
    }
    const auto* src = static_cast<const char*>(x);
    auto* dst = static_cast<char*>(y);
#pragma omp parallel for schedule(static) if (num_rows * row_bytes > 4 * cpu::kParallelMinElements)
    for (int64_t i = 0; i < num_rows; ++i) {
        std::memcpy(dst + i * row_bytes, src + static_cast<int64_t>(rows[i]) * row_bytes,
                    static_cast<size_t>(row_bytes));
    }
}

}  // namespace trtllm::kernels
