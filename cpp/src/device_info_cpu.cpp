// The module without the CUDA backend: no device is ever available.
#include "trtllm/device_info.h"

#include <stdexcept>

namespace trtllm {

bool cuda_available() noexcept { return false; }

int cuda_device_sm_arch(int /*device*/) {
  throw std::runtime_error(
      "trtllm_runtime was built without CUDA; rebuild with -Ccmake.define.TRTLLM_CUDA=ON "
      "on a machine with the CUDA toolkit");
}

}  // namespace trtllm
