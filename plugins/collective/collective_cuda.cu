#include "collective/collective_cuda.h"

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "quantization/quantize_cuda.cuh"

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

constexpr int kPeerThreads = 512;
constexpr int kPeerMaxBlocks = 32;  // all resident at once: a block waits for its peers' same block
constexpr int kPeerControlWords = 5;

// Elements' bits as the kernel sees them: the empty marker is a negative zero.
template <class T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;
template <class T>
constexpr Bits<T> kEmpty = sizeof(T) == 4 ? Bits<T>(0x80000000u) : Bits<T>(0x8000u);
template <class T>
constexpr uint32_t kEmptyWord = sizeof(T) == 4 ? 0x80000000u : 0x80008000u;

// Raw: what a thread moves at once, 16 bytes (uint4) or one element's Bits<T>.
__device__ __forceinline__ uint4 load_volatile(const uint4* p) {
    uint4 v;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}
__device__ __forceinline__ uint32_t load_volatile(const uint32_t* p) { return *static_cast<const volatile uint32_t*>(p); }
__device__ __forceinline__ uint16_t load_volatile(const uint16_t* p) { return *static_cast<const volatile uint16_t*>(p); }

__device__ __forceinline__ void store_volatile(uint4* p, const uint4& v) {
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}
__device__ __forceinline__ void store_volatile(uint32_t* p, uint32_t v) { *static_cast<volatile uint32_t*>(p) = v; }
__device__ __forceinline__ void store_volatile(uint16_t* p, uint16_t v) { *static_cast<volatile uint16_t*>(p) = v; }

// The steps of one peer all-reduce call, shared by the plain kernel and the one fused with the
// residual norm. Every block of a call reads its slot and control words the same way.
struct PeerCall {
    uint32_t call;
    int slot, previous;  // this call's slot; the previous call's, emptied at the end

    __device__ __forceinline__ explicit PeerCall(const PeerBuffers& p)
        : call(p.control[0]), slot(static_cast<int>(call % 3)), previous(static_cast<int>((call + 2) % 3)) {}

    template <class Raw>
    __device__ __forceinline__ static Raw* part_of(const PeerBuffers& p, int buffer, int s, int r) {
        return static_cast<Raw*>(p.buffers[buffer]) + (int64_t{s} * p.world + r) * (p.part_bytes / int64_t{sizeof(Raw)});
    }

    // Unit i of this rank's data into part `rank` of this slot in every rank's buffer (a -0 is
    // pushed as +0: -0 marks empty).
    template <class T, class Raw>
    __device__ __forceinline__ void push(const PeerBuffers& p, int64_t i, Raw v) const {
        constexpr int kPer = sizeof(Raw) / sizeof(T);
        Bits<T>* e = reinterpret_cast<Bits<T>*>(&v);
#pragma unroll
        for (int k = 0; k < kPer; ++k) e[k] = e[k] == kEmpty<T> ? Bits<T>(0) : e[k];
        for (int r = 0; r < p.world; ++r) store_volatile(part_of<Raw>(p, r, slot, p.rank) + i, v);
    }

    // acc (zeros) += unit i of every rank's part, in rank order, each part waited for until it holds data.
    template <class T, class Raw>
    __device__ __forceinline__ void sum(const PeerBuffers& p, int64_t i, float (&acc)[sizeof(Raw) / sizeof(T)]) const {
        constexpr int kPer = sizeof(Raw) / sizeof(T);
        for (int r = 0; r < p.world; ++r) {
            const Raw* src = part_of<Raw>(p, p.rank, slot, r) + i;
            Raw v;
            bool empty = true;
            while (empty) {
                v = load_volatile(src);
                const Bits<T>* e = reinterpret_cast<const Bits<T>*>(&v);
                empty = false;
#pragma unroll
                for (int k = 0; k < kPer; ++k) empty |= e[k] == kEmpty<T>;
            }
            const T* x = reinterpret_cast<const T*>(&v);
#pragma unroll
            for (int k = 0; k < kPer; ++k) acc[k] += to_float(x[k]);
        }
    }

    // After this block's last read of the call: the previous call's slot (every rank has pushed into
    // it and this rank has read it all) is emptied, and the last block to finish numbers the next call.
    template <class T>
    __device__ __forceinline__ void finish(const PeerBuffers& p, int64_t bytes) const {
        const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x, stride = int64_t{gridDim.x} * blockDim.x;
        const int64_t previous_units = (int64_t{p.control[2 + previous]} + 15) / 16;
        const uint4 empty = make_uint4(kEmptyWord<T>, kEmptyWord<T>, kEmptyWord<T>, kEmptyWord<T>);
        for (int r = 0; r < p.world; ++r) {
            uint4* dst = part_of<uint4>(p, p.rank, previous, r);
            for (int64_t i = first; i < previous_units; i += stride) dst[i] = empty;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            if (atomicAdd(&p.control[1], 1u) == gridDim.x - 1) {
                p.control[1] = 0;
                p.control[2 + slot] = static_cast<uint32_t>(bytes);
                p.control[0] = call + 1;
            }
        }
    }
};

template <class T, class Raw>
__global__ void __launch_bounds__(kPeerThreads) peer_all_reduce_kernel(const Raw* in, Raw* out, int64_t units,
                                                                        PeerBuffers p) {
    constexpr int kPer = sizeof(Raw) / sizeof(T);
    const PeerCall c(p);
    const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x, stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = first; i < units; i += stride) c.push<T>(p, i, in[i]);
    for (int64_t i = first; i < units; i += stride) {
        float acc[kPer] = {};
        c.sum<T, Raw>(p, i, acc);
        Raw o;
        T* y = reinterpret_cast<T*>(&o);
#pragma unroll
        for (int k = 0; k < kPer; ++k) y[k] = from_float<T>(acc[k]);
        out[i] = o;
    }
    c.finish<T>(p, units * static_cast<int64_t>(sizeof(Raw)));
}

// all_reduce_add_rms_norm through peer memory: a block per row (rows strided over at most
// kPeerMaxBlocks blocks, all resident), a 16-byte vector of the row per thread, kept in registers
// from the sum to the norm. The arithmetic is the unfused ops': the sum over the ranks rounded once,
// plus the residual rounded, then norm_row_vec_kernel's RMSNorm (norm_cuda.cu).
template <class T, class Store>
__global__ void __launch_bounds__(1024) peer_all_reduce_add_rms_norm_kernel(const uint4* partial, const T* residual,
                                                                            const T* weight, Store normed, T* sum,
                                                                            int64_t rows, int vectors, float eps,
                                                                            PeerBuffers p) {
    constexpr int V = kVec<T>;
    // Launched early: the GEMV after it is released as it begins (its blocks are all resident, so
    // the GEMV's blocks cannot keep any from starting), and the norm weights, which no kernel
    // writes, load before the wait; the control words and the partial sums after it.
    let_next_kernel_start();
    const int64_t dim = int64_t{vectors} * V, col = int64_t{threadIdx.x} * V;
    const bool active = static_cast<int>(threadIdx.x) < vectors;
    float w[V];
    if (active) load_vec(weight + col, w);
    wait_for_prior_kernels();
    const PeerCall c(p);
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        if (active) c.push<T>(p, row * vectors + threadIdx.x, partial[row * vectors + threadIdx.x]);
    }
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t off = row * dim;
        float x[V] = {};
        if (active) {
            float acc[V] = {}, r[V];
            c.sum<T, uint4>(p, row * vectors + threadIdx.x, acc);
            load_vec(residual + off + col, r);
#pragma unroll
            for (int k = 0; k < V; ++k) x[k] = to_float(from_float<T>(to_float(from_float<T>(acc[k])) + r[k]));
            store_vec(sum + off + col, x);  // exact: already rounded to T
        }
        float sq = 0.0f;
#pragma unroll
        for (int k = 0; k < V; ++k) sq += x[k] * x[k];
        const float inv = 1.0f / sqrtf(block_sum(sq) / static_cast<float>(dim) + eps);
        if (active) {
#pragma unroll
            for (int k = 0; k < V; ++k) normed(off + col + k, col + k, x[k] * inv * w[k]);
        }
    }
    c.finish<T>(p, rows * vectors * 16);
}

template <class T>
__global__ void peer_buffer_init_kernel(uint4* buffer, int64_t units, uint32_t* control) {
    const uint4 empty = make_uint4(kEmptyWord<T>, kEmptyWord<T>, kEmptyWord<T>, kEmptyWord<T>);
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < units; i += stride) buffer[i] = empty;
    if (blockIdx.x == 0 && threadIdx.x < kPeerControlWords) control[threadIdx.x] = 0;
}

template <class T, class Raw>
void launch_peer_all_reduce(const void* in, void* out, int64_t units, const PeerBuffers& peers, cudaStream_t stream) {
    const int64_t blocks = std::min<int64_t>(kPeerMaxBlocks, (units + kPeerThreads - 1) / kPeerThreads);
    peer_all_reduce_kernel<T, Raw><<<static_cast<unsigned>(blocks), kPeerThreads, 0, stream>>>(
        static_cast<const Raw*>(in), static_cast<Raw*>(out), units, peers);
}

size_t peer_part_bytes(size_t max_bytes) { return (max_bytes + 15) / 16 * 16; }

// A buffer's 3 slots x world parts; the control words follow them.
size_t peer_data_bytes(size_t max_bytes, int world) {
    return 3 * static_cast<size_t>(world) * peer_part_bytes(max_bytes);
}

}  // namespace

size_t peer_buffer_bytes(size_t max_bytes, int world) {
    return peer_data_bytes(max_bytes, world) + sizeof(uint32_t) * kPeerControlWords;
}

PeerBuffers peer_buffers_layout(int rank, int world, size_t max_bytes, void* own) {
    PeerBuffers p;
    p.rank = rank;
    p.world = world;
    p.part_bytes = static_cast<int64_t>(peer_part_bytes(max_bytes));
    if (own != nullptr) {
        p.control = reinterpret_cast<uint32_t*>(static_cast<std::byte*>(own) + peer_data_bytes(max_bytes, world));
    }
    return p;
}

void peer_buffer_init_cuda(void* buffer, size_t max_bytes, int world, DType dtype, cudaStream_t stream) {
    const size_t data = peer_data_bytes(max_bytes, world);
    uint32_t* control = peer_buffers_layout(0, world, max_bytes, buffer).control;
    const auto units = static_cast<int64_t>(data / 16);
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        peer_buffer_init_kernel<T><<<blocks_for(units, kThreads), kThreads, 0, stream>>>(static_cast<uint4*>(buffer), units,
                                                                                       control);
    });
    CHECK_LAUNCH("peer_buffer_init_kernel");
}

void peer_all_reduce_cuda(const void* in, void* out, DType dtype, int64_t count, const PeerBuffers& peers,
                          cudaStream_t stream) {
    if (count <= 0) return;
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
        if (bytes % 16 == 0 && aligned16(in) && aligned16(out)) {
            launch_peer_all_reduce<T, uint4>(in, out, bytes / 16, peers, stream);
        } else {
            launch_peer_all_reduce<T, Bits<T>>(in, out, count, peers, stream);
        }
    });
    CHECK_LAUNCH("peer_all_reduce_kernel");
}

bool peer_add_rms_norm_fits(DType dtype, int64_t dim, std::initializer_list<const void*> pointers) {
    if (dtype != DType::kBFloat16 && dtype != DType::kFloat16 && dtype != DType::kFloat32) return false;
    const int64_t per_vector = 16 / static_cast<int64_t>(dtype_size(dtype));
    if (dim <= 0 || dim % per_vector != 0 || dim / per_vector > 1024) return false;
    for (const void* q : pointers) {
        if (!aligned16(q)) return false;
    }
    return true;
}

void peer_all_reduce_add_rms_norm_cuda(const void* partial, const void* residual, const void* weight, void* normed,
                                       void* sum, DType dtype, int64_t rows, int64_t dim, float eps,
                                       const PeerBuffers& peers, cudaStream_t stream, const OutputQuantCuda* quant) {
    if (rows <= 0) return;
    if (!peer_add_rms_norm_fits(dtype, dim, {partial, residual, weight, sum})) {
        throw std::invalid_argument("peer_all_reduce_add_rms_norm_cuda: dim " + std::to_string(dim) +
                                    " and pointers do not fit the kernel (see peer_add_rms_norm_fits)");
    }
    if (rows * dim * static_cast<int64_t>(dtype_size(dtype)) > peers.part_bytes) {
        throw std::invalid_argument("peer_all_reduce_add_rms_norm_cuda: " + std::to_string(rows) + " x " +
                                    std::to_string(dim) + " items exceed the peer buffers' " +
                                    std::to_string(peers.part_bytes) + " bytes");
    }
    if (quant != nullptr) check_output_quant(*quant, dim, "all_reduce_add_rms_norm");
    TRTLLM_DISPATCH_FLOAT(dtype, T, {
        const int vectors = static_cast<int>(dim / kVec<T>);
        const auto threads = static_cast<unsigned>((vectors + 31) / 32 * 32);
        const auto blocks = static_cast<unsigned>(std::min<int64_t>(kPeerMaxBlocks, rows));
        TRTLLM_DISPATCH_STORE(T, quant, normed, {
            launch_after_prior("peer_all_reduce_add_rms_norm_kernel", peer_all_reduce_add_rms_norm_kernel<T, Store>,
                               blocks, threads, 0, stream, static_cast<const uint4*>(partial),
                               static_cast<const T*>(residual), static_cast<const T*>(weight), store,
                               static_cast<T*>(sum), rows, vectors, eps, peers);
        });
    });
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
