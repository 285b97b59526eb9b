// Host-side CUDA helpers shared by the CUDA backend, the kernels' launchers and the bindings:
// CHECK_CUDA on every runtime call, and RAII owners for device memory, pinned host memory and
// streams. Only included where TRTLLM_WITH_CUDA is defined.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace trtllm {

class CudaError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        throw CudaError(std::string("CUDA error: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                        cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
    }
}

#define CHECK_CUDA(call) ::trtllm::check_cuda((call), #call, __FILE__, __LINE__)
// After every kernel launch: a bad launch configuration is reported here, not at the next sync.
#define CHECK_LAUNCH(name) ::trtllm::check_cuda(cudaGetLastError(), name, __FILE__, __LINE__)

// Device memory, freed on destruction. Move-only.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes > 0) CHECK_CUDA(cudaMalloc(&ptr_, bytes));
    }
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = std::exchange(o.ptr_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void* get() const { return ptr_; }
    template <class T> T* as() const { return static_cast<T*>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void reset() noexcept {
        if (ptr_ != nullptr) cudaFree(ptr_);  // no throw from a destructor; a failure here has no one to tell
        ptr_ = nullptr;
        bytes_ = 0;
    }
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Page-locked host memory: asynchronous copies to and from it really are asynchronous.
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    explicit PinnedBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes > 0) CHECK_CUDA(cudaMallocHost(&ptr_, bytes));
    }
    ~PinnedBuffer() {
        if (ptr_ != nullptr) cudaFreeHost(ptr_);
    }
    PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(bytes_, o.bytes_);
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;

    void* get() const { return ptr_; }
    template <class T> T* as() const { return static_cast<T*>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

class CudaStream {
public:
    CudaStream() { CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
    ~CudaStream() {
        if (stream_ != nullptr) cudaStreamDestroy(stream_);
    }
    CudaStream(const CudaStream&) = delete;
    CudaStream& operator=(const CudaStream&) = delete;
    cudaStream_t get() const { return stream_; }

private:
    cudaStream_t stream_ = nullptr;
};

class CudaEvent {
public:
    CudaEvent() { CHECK_CUDA(cudaEventCreate(&event_)); }
    ~CudaEvent() {
        if (event_ != nullptr) cudaEventDestroy(event_);
    }
    CudaEvent(const CudaEvent&) = delete;
    CudaEvent& operator=(const CudaEvent&) = delete;
    cudaEvent_t get() const { return event_; }

private:
    cudaEvent_t event_ = nullptr;
};

}  // namespace trtllm
