#include "trtllm/device_info.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace trtllm {

bool cuda_available() noexcept {
  int count = 0;
  // No driver, no device or a driver older than the runtime all end here as "not available".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // reset the last error so a later, unrelated call does not report it
    return false;
  }
  return count > 0;
}

int cuda_device_sm_arch(int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  if (device < 0 || device >= count) {
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" +
                             std::to_string(count) + " visible)");
  }
  cudaDeviceProp prop{};
  err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    throw std::runtime_error("cudaGetDeviceProperties(" + std::to_string(device) +
                             ") failed: " + cudaGetErrorString(err));
  }
  return prop.major * 10 + prop.minor;
}

}  // namespace trtllm
