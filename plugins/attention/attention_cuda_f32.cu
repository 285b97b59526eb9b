// The attend kernels for float activations (see attention_kernels.cuh).
#include "attention/attention_kernels.cuh"

namespace trtllm::kernels::attn {
TRTLLM_INSTANTIATE_ATTEND(float, float)
}  // namespace trtllm::kernels::attn
