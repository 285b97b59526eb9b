// Embedding lookup and row gathers.
#pragma once

#include <cstdint>

#include "trtllm/dtype.h"

namespace trtllm::kernels {

// y[t] = table[ids[t]]; ids are validated against the vocab before they reach the kernel.
void embedding_cpu(const int32_t* ids, const void* table, void* y, DType dtype, int64_t num_tokens, int64_t hidden);

// y[i] = x[rows[i]] for rows of `row_bytes` bytes (last_tokens).
void gather_rows_cpu(const void* x, const int32_t* rows, void* y, int64_t num_rows, int64_t row_bytes);

}  // namespace trtllm::kernels
