// The attend kernels for __nv_bfloat16 activations (see attention_kernels.cuh).
#include "attention/attention_kernels.cuh"

namespace trtllm::kernels::attn {
TRTLLM_INSTANTIATE_ATTEND(__nv_bfloat16, __nv_bfloat16)
TRTLLM_INSTANTIATE_ATTEND(__nv_bfloat16, Fp8KvCache)
}  // namespace trtllm::kernels::attn
