#include <cstring>

#include "collective/collective.h"

namespace trtllm::kernels {

void concat_shards_cpu(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp) {
    const auto* src = static_cast<const std::byte*>(gathered);
    auto* dst = static_cast<std::byte*>(out);
    const size_t shard_row_bytes = static_cast<size_t>(shard_cols) * elem_bytes;
    for (int r = 0; r < tp; ++r) {
        for (int64_t row = 0; row < rows; ++row) {
            std::memcpy(dst + (static_cast<size_t>(row) * tp + r) * shard_row_bytes,
                        src + (static_cast<size_t>(r) * rows + row) * shard_row_bytes, shard_row_bytes);
        }
    }
}

}  // namespace trtllm::kernels
