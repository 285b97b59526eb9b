// The attend kernels for __nv_bfloat16 activations (see attention_kernels.cuh).
#include "attention/attention_kernels.cuh"

namespace trtllm::kernels::attn {
TRTLLM_INSTANTIATE_ATTEND(__nv_bfloat16)
}  // namespace trtllm::kernels::attn
