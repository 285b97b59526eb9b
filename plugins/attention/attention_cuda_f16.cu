// The attend kernels for __half activations (see attention_kernels.cuh).
#include "attention/attention_kernels.cuh"

namespace trtllm::kernels::attn {
TRTLLM_INSTANTIATE_ATTEND(__half, __half)
TRTLLM_INSTANTIATE_ATTEND(__half, Fp8KvCache)
}  // namespace trtllm::kernels::attn
