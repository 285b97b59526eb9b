#include "collective/collective_cuda.h"

#include <algorithm>

#include "cuda_common.cuh"

namespace trtllm::kernels {
namespace {

using namespace cuda;
constexpr int kThreads = 256;

// One thread per output unit (U: 1 to 16 bytes, a whole number of units per shard row).
template <class U>
__global__ void concat_shards_kernel(const U* gathered, U* out, int64_t rows, int64_t shard_units, int tp) {
    const int64_t row_units = shard_units * tp, total = rows * row_units;
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t row = i / row_units, col = i % row_units;
        const int64_t rank = col / shard_units, c = col % shard_units;
        out[i] = gathered[(rank * rows + row) * shard_units + c];
    }
}

template <class U>
void launch_concat(const void* gathered, void* out, int64_t rows, int64_t shard_units, int tp, cudaStream_t stream) {
    concat_shards_kernel<U><<<blocks_for(rows * shard_units * tp, kThreads), kThreads, 0, stream>>>(
        static_cast<const U*>(gathered), static_cast<U*>(out), rows, shard_units, tp);
}

template <class T>
__global__ void widen_kernel(const T* x, float* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = to_float(x[i]);
}

template <class T>
__global__ void narrow_kernel(const float* x, T* y, int64_t n) {
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = from_float<T>(x[i]);
}

// System-scope release/acquire on the barrier flags: a peer's GPU sees the staging writes that
// came before a flag once it sees the flag.
__device__ __forceinline__ void store_release_sys(uint32_t* p, uint32_t v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t load_acquire_sys(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Block b of every rank tells block b of every rank (itself included) that it reached `phase` of
// call `epoch`, and waits until all have. Flags of one block and phase only ever grow by one per
// call, and no rank can start call epoch + 1 before every rank has passed this call's last phase.
__device__ void peer_barrier(const PeerBuffers& p, int phase, uint32_t epoch) {
    __threadfence_system();  // this thread's staging writes (or reads) come before the flag
    __syncthreads();
    if (threadIdx.x < p.world) {
        const int peer = threadIdx.x;
        const int slot = (phase * kPeerMaxBlocks + static_cast<int>(blockIdx.x)) * kPeerMaxRanks;
        store_release_sys(p.flags[peer] + slot + p.rank, epoch);
        const uint32_t* from_peer = p.flags[p.rank] + slot + peer;
        while (load_acquire_sys(from_peer) != epoch) {
        }
    }
    __syncthreads();
}

constexpr int kPeerThreads = 512;

// U: the unit a thread moves at once, 16 bytes of T or one T. Block b owns a contiguous range of
// units: it stages this rank's part of that range and sums every rank's.
template <class T, class U>
__global__ void __launch_bounds__(kPeerThreads) peer_all_reduce_kernel(const U* in, U* out, int64_t units,
                                                                        PeerBuffers p) {
    constexpr int kPer = sizeof(U) / sizeof(T);
    const uint32_t epoch = p.epochs[blockIdx.x] + 1;  // thread 0 stores it back at the very end
    const int64_t per_block = (units + gridDim.x - 1) / gridDim.x;
    const int64_t begin = int64_t{blockIdx.x} * per_block;
    const int64_t end = begin + per_block < units ? begin + per_block : units;
    U* staging = static_cast<U*>(p.staging[p.rank]);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) staging[i] = in[i];
    peer_barrier(p, 0, epoch);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        float acc[kPer] = {};
        for (int r = 0; r < p.world; ++r) {
            // Through L2, not L1: the line may hold this address's value from an earlier call.
            const U u = __ldcg(static_cast<const U*>(p.staging[r]) + i);
            const T* v = reinterpret_cast<const T*>(&u);
#pragma unroll
            for (int k = 0; k < kPer; ++k) acc[k] += to_float(v[k]);
        }
        U o;
        T* ov = reinterpret_cast<T*>(&o);
#pragma unroll
        for (int k = 0; k < kPer; ++k) ov[k] = from_float<T>(acc[k]);
        out[i] = o;
    }
    peer_barrier(p, 1, epoch);
    if (threadIdx.x == 0) p.epochs[blockIdx.x] = epoch;
}

template <class T, class U>
void launch_peer_all_reduce(const void* in, void* out, int64_t units, const PeerBuffers& peers, cudaStream_t stream) {
    const int64_t blocks = std::min<int64_t>(kPeerMaxBlocks, (units + kPeerThreads - 1) / kPeerThreads);
    peer_all_reduce_kernel<T, U><<<static_cast<unsigned>(blocks), kPeerThreads, 0, stream>>>(
        static_cast<const U*>(in), static_cast<U*>(out), units, peers);
}

}  // namespace

size_t peer_flags_offset(size_t max_bytes) { return (max_bytes + 15) / 16 * 16; }

size_t peer_buffer_bytes(size_t max_bytes) {
    return peer_flags_offset(max_bytes) + sizeof(uint32_t) * (2 * kPeerMaxBlocks * kPeerMaxRanks + kPeerMaxBlocks);
}

void peer_all_reduce_cuda(const void* in, void* out, DType dtype, int64_t count, const PeerBuffers& peers,
                          cudaStream_t stream) {
    if (count <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
        if (bytes % 16 == 0 && aligned16(in) && aligned16(out)) {
            launch_peer_all_reduce<T, uint4>(in, out, bytes / 16, peers, stream);
        } else {
            launch_peer_all_reduce<T, T>(in, out, count, peers, stream);
        }
    });
    CHECK_LAUNCH("peer_all_reduce_kernel");
}

void concat_shards_cuda(const void* gathered, void* out, size_t elem_bytes, int64_t rows, int64_t shard_cols, int tp,
                        cudaStream_t stream) {
    if (rows <= 0 || shard_cols <= 0 || tp <= 0) return;
    // The widest unit that divides a shard row and both pointers' alignment: 16-byte moves for
    // the float32 logits shards.
    const uint64_t row_bytes = static_cast<uint64_t>(shard_cols) * elem_bytes;
    const uint64_t bits = row_bytes | reinterpret_cast<uintptr_t>(gathered) | reinterpret_cast<uintptr_t>(out);
    const auto units = [&](int64_t unit_bytes) { return static_cast<int64_t>(row_bytes) / unit_bytes; };
    if (bits % 16 == 0) {
        launch_concat<uint4>(gathered, out, rows, units(16), tp, stream);
    } else if (bits % 8 == 0) {
        launch_concat<uint2>(gathered, out, rows, units(8), tp, stream);
    } else if (bits % 4 == 0) {
        launch_concat<uint32_t>(gathered, out, rows, units(4), tp, stream);
    } else if (bits % 2 == 0) {
        launch_concat<uint16_t>(gathered, out, rows, units(2), tp, stream);
    } else {
        launch_concat<uint8_t>(gathered, out, rows, units(1), tp, stream);
    }
    CHECK_LAUNCH("concat_shards_kernel");
}

void widen_to_float_cuda(const void* x, DType dtype, float* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        widen_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x), y, n);
    });
    CHECK_LAUNCH("widen_kernel");
}

void narrow_from_float_cuda(const float* x, void* y, DType dtype, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        narrow_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, static_cast<T*>(y), n);
    });
    CHECK_LAUNCH("narrow_kernel");
}

}  // namespace trtllm::kernels
