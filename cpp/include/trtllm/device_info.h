#pragma once
// Which CUDA device, if any, this process can use. Built from cpp/src/cuda/device_info.cu when
// the module has the CUDA backend (TRTLLM_WITH_CUDA), else from cpp/src/device_info_cpu.cpp.

namespace trtllm {

// True when the module was built with CUDA and at least one device is visible.
bool cuda_available() noexcept;

// The SM architecture of `device` as major*10+minor (90 for Hopper).
// Throws std::runtime_error when there is no such device or no CUDA backend.
int cuda_device_sm_arch(int device = 0);

}  // namespace trtllm
