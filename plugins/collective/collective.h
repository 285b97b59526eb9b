// Layout work around the tensor-parallel collectives (docs/opset.md `all_gather`, `all_reduce`);
// the collectives themselves are MPI's (CPU) or NCCL's (GPU). CUDA versions: collective_cuda.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace trtllm::kernels {

// The ranks' shards as an all-gather leaves them, `gathered` [tp][rows][shard_cols], into the
// op's layout `out` [rows][tp * shard_cols]: concatenation along the last dim in rank order.
// Elements are `elem_bytes` wide; the two buffers must not overlap.
void concat_shards_cpu(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp);

}  // namespace trtllm::kernels
