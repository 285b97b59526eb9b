// Kernels of the attention op's attend step (decode, prefill on CUDA cores; the
// tensor-core prefill for bf16/fp16 and head_dim 64/128 is in attention_prefill_tc.cuh) and their launcher,
// shared by the per-dtype translation units attention_cuda_{f32,bf16,f16}.cu (split so that a
// parallel build compiles the 15 instantiations of each dtype at the same time).
#pragma once

#include "attention/attention_cuda.h"
#include "attention/attention_prefill_tc.cuh"
#include "attention/kv_cache_access.cuh"
#include "cuda_common.cuh"

namespace trtllm::kernels::attn {

using namespace cuda;

constexpr int kPrepWarps = 4;
constexpr int kDecodeThreads = 128;
constexpr int kMaxKeysPerSplit = 256;  // keys per tile of a decode block, and the most splits (decode_kernel)
constexpr int kMinKeysPerSplit = 32;   // the fewest keys a decode split takes (8B batch-1 decode: 32 beat 64 and 16)
constexpr int kPrefetchMaxHeads = 64;  // decode blocks prefetch their keys while requests x kv heads <= this
constexpr int kGroupChunk = 4;        // query heads per register pass in the decode kernel
constexpr int kDecodeMinBlocks = 8;   // decode blocks resident per SM: registers capped so that a large batch keeps
                                      // enough loads in flight to stream the KV cache at full bandwidth
// The same for the small (prefetching) batches: no 64-register cap, under which the bf16 d = 128
// kernel spilled 68 bytes (bounded to 2 it takes 109 registers and spills none). 8B shape, batch 1,
// H100 (session 22): 10.7 -> 9.3 us at 384 keys, 30.1 -> 27.9 at 4095; decode step bf16 5.760 ->
// 5.690 ms, fp8_lmh 3.312 -> 3.205.
constexpr int kDecodeSmallBatchMinBlocks = 2;
constexpr int kDecodeMaxCluster = 8;  // splits of one request and kv head merged in one block's shared memory (8B
                                      // shape, batch 1, H100: clusters of 16 took ~1.2 us longer at 32-128 keys,
                                      // ~0.5 at 256-512, and won only from 1024 keys)
constexpr size_t kMaxPushBytes = 64 * 1024;  // the most shared memory for a cluster's pushed partial results
constexpr int kClusterMaxChunk = 128;  // keys a cluster split takes at most before the global merge is used (8B
                                       // shape, batch 1, H100: at 1024 keys 8 cluster splits of 128 took 17.0 us,
                                       // 33 splits of 32 merged through global memory 19.5; 512 keys: 12.4 / 13.9)

// The decode kernel's P·V partial sums: a warp holds 32 / (D / V) key groups, added by shuffles first,
// so shared memory keeps one slot per warp (or per key group when a row spans whole warps).
template <class T, int D>
constexpr int decode_red_slots() {
    constexpr int kVecPerRow = D / kVec<T>;
    constexpr int kKeyGroups = kDecodeThreads / kVecPerRow;
    return kVecPerRow >= 32 ? kKeyGroups : kDecodeThreads / 32;
}
constexpr int kTileRows = 64;         // query rows (token x head) per prefill tile
constexpr int kKeyTile = 32;
constexpr int kPrefillThreads = 128;  // two threads per query row

// Index of the key row of position `pos`, kv head kh, in the cache block `block` (in rows of d elements;
// its value row is h_kv * tpb rows further on).
__device__ __forceinline__ int64_t key_row(int64_t block, int pos, int kh, int h_kv, int tpb) {
    return (block * 2 * h_kv + kh) * tpb + pos % tpb;
}

// Row `pos` (k: which 0, v: 1) of kv head kh in the cache block `block` of tpb tokens.
template <class T>
__device__ __forceinline__ T* kv_block_row(T* kv, int64_t block, int pos, int which, int kh, int h_kv, int tpb, int d) {
    return kv + (key_row(block, pos, kh, h_kv, tpb) + int64_t{which} * h_kv * tpb) * d;
}

template <class T>
__device__ __forceinline__ T* kv_row(T* kv, const PagedBatchCuda& b, int r, int pos, int which, int kh, int h_kv, int d) {
    const int64_t block = b.block_table[int64_t{r} * b.max_blocks_per_seq + pos / b.tokens_per_block];
    return kv_block_row(kv, block, pos, which, kh, h_kv, b.tokens_per_block, d);
}

// The per-head transforms before the cache: q/k RMSNorm (weights in T, or null) and RoPE (null: none).
template <class T>
struct QkPrep {
    const float* inv_freq = nullptr;
    const T* q_norm = nullptr;
    const T* k_norm = nullptr;
    float eps = 0.0f;
};

// What one warp reads for one head of prep_head, loaded at once (one round trip to memory, not
// two): lane's elements x = lane + 32 i of the head's row and its RoPE frequencies j = lane + 32 i
// < d / 2 (the q/k norm weights, for the models that have them, are read where they are used, which
// keeps the decode kernel's registers under its bound). MAXD: the largest head_dim of the caller.
template <int MAXD>
struct HeadInputs {
    static constexpr int kX = (MAXD + 31) / 32, kF = (MAXD / 2 + 31) / 32;
    float x[kX], f[kF];
};

template <int MAXD, class T>
__device__ __forceinline__ HeadInputs<MAXD> load_head(const T* qkv_row, int head, int h, int h_kv, int d,
                                                      const QkPrep<T>& p, int lane) {
    HeadInputs<MAXD> in;
    const T* row = qkv_row + int64_t{head} * d;
    const bool rope = head < h + h_kv && p.inv_freq != nullptr;  // not v
#pragma unroll
    for (int i = 0; i < in.kX; ++i) in.x[i] = lane + 32 * i < d ? to_float(row[lane + 32 * i]) : 0.0f;
#pragma unroll
    for (int i = 0; i < in.kF; ++i) {
        const int j = lane + 32 * i;
        in.f[i] = rope && j < d / 2 ? p.inv_freq[j] : 0.0f;
    }
    return in;
}

// One warp: head `head` of a token's qkv row (heads [0, h) are q, [h, h + h_kv) k, then v), the
// token at position pos, from its loaded inputs -> buf[0, d) in float32, q and k heads normalized
// and rotated.
template <int MAXD, class T>
__device__ __forceinline__ void prep_loaded_head(const HeadInputs<MAXD>& in, int head, int pos, int h, int h_kv, int d,
                                                 const QkPrep<T>& p, float* buf, int lane) {
#pragma unroll
    for (int i = 0; i < in.kX; ++i) {
        if (lane + 32 * i < d) buf[lane + 32 * i] = in.x[i];
    }
    __syncwarp();
    if (head >= h + h_kv) return;  // v: as it is
    if (p.q_norm != nullptr) {
        float sq = 0.0f;
#pragma unroll
        for (int i = 0; i < in.kX; ++i) {
            if (lane + 32 * i < d) sq += in.x[i] * in.x[i];
        }
        const float inv = 1.0f / sqrtf(warp_sum(sq) / static_cast<float>(d) + p.eps);
        const T* w = head < h ? p.q_norm : p.k_norm;
#pragma unroll
        for (int i = 0; i < in.kX; ++i) {
            if (lane + 32 * i < d) buf[lane + 32 * i] = in.x[i] * inv * to_float(w[lane + 32 * i]);
        }
        __syncwarp();
    }
    if (p.inv_freq != nullptr) {
        const int half = d / 2;
#pragma unroll
        for (int i = 0; i < in.kF; ++i) {
            const int j = lane + 32 * i;
            if (j >= half) continue;
            const float angle = static_cast<float>(pos) * in.f[i];  // one float32 product, as HF
            float s, c;
            sincosf(angle, &s, &c);  // one range reduction for both
            const float x1 = buf[j], x2 = buf[j + half];
            buf[j] = x1 * c - x2 * s;
            buf[j + half] = x2 * c + x1 * s;
        }
        __syncwarp();
    }
}

// prep_loaded_head for any head_dim the op takes (<= 256).
template <class T>
__device__ __forceinline__ void prep_head(const T* qkv_row, int head, int pos, int h, int h_kv, int d,
                                          const QkPrep<T>& p, float* buf, int lane) {
    prep_loaded_head(load_head<256>(qkv_row, head, h, h_kv, d, p, lane), head, pos, h, h_kv, d, p, buf, lane);
}

// Thread block clusters (Hopper and later; the host launches clusters there only): the decode splits
// of a request push their partial results into the shared memory of the cluster's first block with
// asynchronous stores that count themselves on a transaction barrier there (no round trip through
// global memory, no fence, no second barrier).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define TRTLLM_CLUSTER_ASM(...) asm volatile(__VA_ARGS__)
#else
#define TRTLLM_CLUSTER_ASM(...) __trap()
#endif

// The address of this block's shared memory address `a` in the block of cluster rank `rank`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t a, int rank) {
    uint32_t mapped = 0;
    TRTLLM_CLUSTER_ASM("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(mapped) : "r"(a), "r"(rank));
    return mapped;
}

// The cluster barrier in two halves: every (non-exited) thread arrives, then may wait for the others.
__device__ __forceinline__ void cluster_arrive_relaxed() {
    TRTLLM_CLUSTER_ASM("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { TRTLLM_CLUSTER_ASM("barrier.cluster.wait.aligned;" ::: "memory"); }

// A transaction barrier (mbarrier) in shared memory: one arrival, then complete when it and the
// announced bytes have arrived.
__device__ __forceinline__ void tx_barrier_init(uint64_t* bar) {
    TRTLLM_CLUSTER_ASM("mbarrier.init.shared::cta.b64 [%0], 1;\n\tfence.mbarrier_init.release.cluster;" ::"r"(
                           smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void tx_barrier_arrive_expect(uint64_t* bar, uint32_t bytes) {
    TRTLLM_CLUSTER_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                       : "memory");
}
__device__ __forceinline__ void tx_barrier_wait(uint64_t* bar, uint32_t parity) {
    uint32_t done = 0;
    while (done == 0) {
        TRTLLM_CLUSTER_ASM(
            "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
            : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
    }
}

// Asynchronous stores into another block's shared memory (cluster addresses from cluster_map) that
// count their bytes on that block's transaction barrier `bar` (also a cluster address).
__device__ __forceinline__ void push_v4(uint32_t dst, float a, float b, float c, float d, uint32_t bar) {
    TRTLLM_CLUSTER_ASM("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];"
                       ::"r"(dst), "r"(__float_as_uint(a)), "r"(__float_as_uint(b)), "r"(__float_as_uint(c)),
                       "r"(__float_as_uint(d)), "r"(bar) : "memory");
}
__device__ __forceinline__ void push_v2(uint32_t dst, float a, float b, uint32_t bar) {
    TRTLLM_CLUSTER_ASM("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.b32 [%0], {%1, %2}, [%3];" ::"r"(dst),
                       "r"(__float_as_uint(a)), "r"(__float_as_uint(b)), "r"(bar) : "memory");
}

// Floats of one split's partial result in the push buffer: o [group][D], then (m, l) per head, padded
// to whole 16-byte vectors.
__host__ __device__ constexpr int decode_push_stride(int group, int d) { return group * d + (2 * group + 3) / 4 * 4; }

// C is the cache's element type (T, or Fp8KvCache read through kv_cache_access.cuh).
// grid (num_decode, h_kv, splits), kDecodeThreads threads, splits a multiple of `cluster` (1, or the
// size of the thread block clusters along z it was launched with). Each block takes one key range
// of one request for all query heads of one kv head, in tiles of kMaxKeysPerSplit keys with an
// online softmax (running max and sum per head, output rescaled per tile). A request of len keys
// uses the first ceil(len / chunk) splits, chunk = max(ceil(len / num_splits), kMinKeysPerSplit):
// the split count is planned for the longest sequence a graph may replay, a short one takes fewer,
// and the other blocks return at once. `prefetch` (a small batch, where each block's chain of
// round trips to memory is the kernel's time): the block first asks the L2 for its first tile's
// keys and values, so that those round trips overlap the q preparation and the loads below hit
// the L2 (8B shape, batch 1 on an H100: 32 keys per split and the prefetch took the decode step
// from 6.16 to 6.03 ms; docs/cuda_backend.md, session 10).
//
// qkv != null (a batch of decode tokens only): the block does qkv_prep's work for its token itself:
// q of its heads into shared memory, and the block whose range ends with the new key writes that
// key and value to the cache before reading its range back (__syncthreads orders a block's
// global writes before its reads), so no prep launch runs. qkv == null: qkv_prep ran, q is in q.
//
// One split: the block writes the normalized output. Several, all in the request's first cluster
// (a sequence of at most cluster * chunk keys; up to cluster * kClusterMaxChunk keys take `cluster`
// splits of at most kClusterMaxChunk keys each): splits 1, 2, ... push their partial results (o
// [group][D] unnormalized, (m, l) per head) into split 0's shared memory and return; split 0 waits
// for their bytes on its transaction barrier and merges. Otherwise each writes its partial result
// to global memory, and the last block of the request and kv head to finish (a counter in done,
// reset by it for the next launch) merges them into out: a chain of global round trips (write,
// fence, count, read back) the cluster merge does not have.
template <class T, class C, int D, int MIN_BLOCKS = kDecodeMinBlocks>
__global__ void __launch_bounds__(kDecodeThreads, MIN_BLOCKS) decode_kernel(const float* q, const T* qkv, QkPrep<T> prep,
                                                                C* kv, KvScale kvs, PagedBatchCuda b,
                                                                const int32_t* decode_requests, bool decode_identity,
                                                                int h, int h_kv,
                                                                float scale, int num_splits, int cluster, bool prefetch,
                                                                float* part_o, float* part_ml, int* done, T* out) {
    let_next_kernel_start();  // o_proj's GEMV may follow: its blocks load their weights meanwhile
    constexpr int V = kVec<T>;
    constexpr int kVecPerRow = D / V;
    constexpr int kKeyGroups = kDecodeThreads / kVecPerRow;
    // Scores: kKeyLanes threads share a key row (kRowVecs vectors each), kKeysPerPass rows at once.
    // Few lanes per row (at most 8): fewer shuffles to add a row's partial dots, more rows per pass.
    constexpr int kKeyLanes = kVecPerRow < 8 ? kVecPerRow : 8;
    constexpr int kRowVecs = kVecPerRow / kKeyLanes;
    constexpr int kKeysPerPass = kDecodeThreads / kKeyLanes;
    constexpr int kKeysInFlight = kRowVecs < 8 ? 8 / kRowVecs : 1;  // key rows a thread loads before it uses them
                                                                     // (8 vectors)
    constexpr int kValuesInFlight = 4;  // value rows a thread loads before it uses them
    constexpr int kSlots = decode_red_slots<T, D>();
    static_assert(kVecPerRow <= kDecodeThreads && kDecodeThreads % kVecPerRow == 0, "head_dim too large");
    extern __shared__ float dec_smem[];
    __shared__ bool merges;
    const int dec = blockIdx.x, kh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int group = h / h_kv;
    const int r = decode_identity ? dec : decode_requests[dec];
    const int len = b.past_len[r] + 1;
    const int token = b.token_start[r];
    int chunk = max((len + num_splits - 1) / num_splits, kMinKeysPerSplit);
    if (cluster > 1 && len > cluster * chunk && len <= cluster * kClusterMaxChunk) {
        chunk = (len + cluster - 1) / cluster;  // the whole sequence in the first cluster
    }
    const int active = (len + chunk - 1) / chunk;
    const bool cluster_merge = active > 1 && active <= cluster;
    const int k0 = split * chunk, n = min(len, k0 + chunk) - k0;
    if (split >= active) return;  // an exited thread does not hold up the cluster barrier below
    __shared__ alignas(8) uint64_t merge_bar;
    if (cluster_merge) {  // split 0's barrier is set up before any split pushes to it (cluster_wait below)
        if (split == 0 && tid == 0) tx_barrier_init(&merge_bar);
        cluster_arrive_relaxed();
    }
    const int64_t part0 = (int64_t{dec} * h + int64_t{kh} * group) * num_splits + split;  // + g * num_splits
    int64_t* rows = reinterpret_cast<int64_t*>(dec_smem);   // [kMaxKeysPerSplit]: the tile's keys' rows in kv
    float* qs = reinterpret_cast<float*>(rows + kMaxKeysPerSplit);  // [group][D]
    float* os = qs + group * D;                             // [group][D] running output
    float* sc = os + group * D;                             // [group][kMaxKeysPerSplit]
    float* red = sc + group * kMaxKeysPerSplit;             // [kSlots][kGroupChunk][D]
    float* ml = red + kSlots * kGroupChunk * D;             // [group][3]: running max, sum, this tile's rescale
    const int32_t* table = b.block_table + int64_t{r} * b.max_blocks_per_seq;
    const int tpb = b.tokens_per_block;
    const int64_t value_rows = int64_t{h_kv} * tpb;  // a key's value row is this many rows after it
    // Everything the block reads before its first key is loaded at once, one round trip: the cache
    // blocks of the first tile's keys (thread tid: keys tid + u kDecodeThreads), q's inputs (warp g: q
    // head g), and in the block whose range ends with the new key, that key's and value's inputs
    // (warps 0 and 1) and its cache block.
    constexpr int kPagesPerThread = kMaxKeysPerSplit / kDecodeThreads;
    static_assert(kMaxKeysPerSplit % kDecodeThreads == 0, "a thread holds whole keys' cache blocks");
    const int nt0 = min(n, kMaxKeysPerSplit);
    int page[kPagesPerThread];
#pragma unroll
    for (int u = 0; u < kPagesPerThread; ++u) {
        const int j = tid + u * kDecodeThreads;
        page[u] = j < nt0 ? table[(k0 + j) / tpb] : 0;
    }
    const T* qkv_row = qkv != nullptr ? qkv + int64_t{token} * (h + 2 * h_kv) * D : nullptr;
    const bool first_q = qkv != nullptr && warp < group;
    const bool writes_new = qkv != nullptr && k0 + n == len && warp < 2;  // warp 0: the new key, warp 1: its value
    HeadInputs<D> q_in, new_in;
    if (first_q) q_in = load_head<D>(qkv_row, kh * group + warp, h, h_kv, D, prep, lane);
    if (writes_new) new_in = load_head<D>(qkv_row, h + warp * h_kv + kh, h, h_kv, D, prep, lane);
    const int new_block = writes_new ? table[(len - 1) / tpb] : 0;
    if (prefetch) {  // the first tile's keys and values head for the L2 while q is prepared
        constexpr int kRowBytes = D * static_cast<int>(sizeof(C));
        constexpr int kLines = kRowBytes >= 128 ? kRowBytes / 128 : 1;
#pragma unroll
        for (int u = 0; u < kPagesPerThread; ++u) {
            const int j = tid + u * kDecodeThreads;
            if (j >= nt0) continue;
#pragma unroll
            for (int which = 0; which < 2; ++which) {
                const char* row = reinterpret_cast<const char*>(kv_block_row(kv, page[u], k0 + j, which, kh, h_kv, tpb, D));
#pragma unroll
                for (int line = 0; line < kLines; ++line) prefetch_l2_line(row + 128 * line);
            }
        }
    }
    if (qkv != nullptr) {
        if (writes_new) {  // first, so that the stores' round trip overlaps q's preparation; staged in red
            float* buf = red + warp * D;
            prep_loaded_head(new_in, h + warp * h_kv + kh, len - 1, h, h_kv, D, prep, buf, lane);
            C* dst = kv_block_row(kv, new_block, len - 1, warp, kh, h_kv, tpb, D);
            for (int x = lane; x < D; x += 32) store_kv(dst + x, buf[x], kvs);
        }
        if (first_q) prep_loaded_head(q_in, kh * group + warp, len - 1, h, h_kv, D, prep, qs + warp * D, lane);
        for (int g = warp + kDecodeThreads / 32; g < group; g += kDecodeThreads / 32) {
            prep_head(qkv_row, kh * group + g, len - 1, h, h_kv, D, prep, qs + g * D, lane);
        }
    } else {
        for (int i = tid; i < group * D; i += blockDim.x) qs[i] = q[(int64_t{token} * h + int64_t{kh} * group) * D + i];
    }
#pragma unroll
    for (int u = 0; u < kPagesPerThread; ++u) {
        const int j = tid + u * kDecodeThreads;
        if (j < nt0) rows[j] = key_row(page[u], k0 + j, kh, h_kv, tpb);
    }
    for (int i = tid; i < group * D; i += blockDim.x) os[i] = 0.0f;
    for (int g = tid; g < group; g += blockDim.x) {
        ml[3 * g] = -INFINITY;
        ml[3 * g + 1] = 0.0f;
    }
    __syncthreads();
    const int xv = tid % kVecPerRow, kg = tid / kVecPerRow;
    for (int t0 = 0; t0 < n; t0 += kMaxKeysPerSplit) {
        const int nt = min(kMaxKeysPerSplit, n - t0);
        const int kt = k0 + t0;  // first key of the tile
        if (t0 > 0) {  // this tile's keys' rows (the first tile's came with q)
            for (int j = tid; j < nt; j += blockDim.x) rows[j] = key_row(table[(kt + j) / tpb], kt + j, kh, h_kv, tpb);
            __syncthreads();
        }
        // Scores: kKeyLanes threads per key row, each dotting its kRowVecs vectors with every head of
        // the group; the row's partial dots are added by shuffles. A thread loads kKeysInFlight rows'
        // vectors before using them, so each batch costs one round trip to memory: a row past the
        // tile's end loads the tile's last row again (unconditional loads, issued together) and its
        // dots are not kept. The loop bounds and shuffles are the same for every thread (a warp may
        // hold several rows).
        const int kl = tid % kKeyLanes, kp = tid / kKeyLanes;
        for (int j0 = 0; j0 < nt; j0 += kKeysPerPass * kKeysInFlight) {
            KvRaw<T, C> kraw[kKeysInFlight][kRowVecs];
#pragma unroll
            for (int u = 0; u < kKeysInFlight; ++u) {
                const int j = min(j0 + u * kKeysPerPass + kp, nt - 1);
                const C* krow = kv + rows[j] * D;
#pragma unroll
                for (int c = 0; c < kRowVecs; ++c) kraw[u][c] = load_kv_raw<T>(krow + (kl + c * kKeyLanes) * V);
            }
#pragma unroll
            for (int u = 0; u < kKeysInFlight; ++u) {
                if (j0 + u * kKeysPerPass >= nt) break;  // the same for the whole block: no row of this pass is left
                const int j = j0 + u * kKeysPerPass + kp;
                float kf[kRowVecs][V];
#pragma unroll
                for (int c = 0; c < kRowVecs; ++c) kv_raw_to_float<T, C>(kraw[u][c], kf[c], kvs);
                for (int gb = 0; gb < group; gb += kGroupChunk) {
                    float dot[kGroupChunk];
#pragma unroll
                    for (int g = 0; g < kGroupChunk; ++g) {
                        dot[g] = 0.0f;
                        if (gb + g >= group) continue;
#pragma unroll
                        for (int c = 0; c < kRowVecs; ++c) {
                            const float* qg = qs + (gb + g) * D + (kl + c * kKeyLanes) * V;
#pragma unroll
                            for (int i = 0; i < V; ++i) dot[g] += kf[c][i] * qg[i];
                        }
                    }
#pragma unroll
                    for (int off = kKeyLanes / 2; off > 0; off /= 2) {
#pragma unroll
                        for (int g = 0; g < kGroupChunk; ++g) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], off);
                    }
                    if (kl == 0 && j < nt) {
#pragma unroll
                        for (int g = 0; g < kGroupChunk; ++g) {
                            if (gb + g < group) sc[(gb + g) * kMaxKeysPerSplit + j] = dot[g] * scale;
                        }
                    }
                }
            }
        }
        __syncthreads();
        // Online softmax: one warp per head.
        for (int g = warp; g < group; g += kDecodeThreads / 32) {
            float* s = sc + g * kMaxKeysPerSplit;
            float m = ml[3 * g];
            for (int j = lane; j < nt; j += 32) m = fmaxf(m, s[j]);
            m = warp_max(m);  // finite: the tile has at least one key
            float l = 0.0f;
            for (int j = lane; j < nt; j += 32) {
                const float e = expf(s[j] - m);
                s[j] = e;
                l += e;
            }
            l = warp_sum(l);
            __syncwarp();
            if (lane == 0) {
                const float corr = expf(ml[3 * g] - m);  // 0 on the first tile
                ml[3 * g] = m;
                ml[3 * g + 1] = ml[3 * g + 1] * corr + l;
                ml[3 * g + 2] = corr;
            }
        }
        __syncthreads();
        // P·V: thread (key group kg, vector xv) sums rows j = kg (mod kKeyGroups), kValuesInFlight rows
        // loaded at once (past the tile's end: its last row again, with weight 0); the key groups of a
        // warp are added by shuffles, then the slots through shared memory.
        for (int gb = 0; gb < group; gb += kGroupChunk) {
            float acc[kGroupChunk][V];
#pragma unroll
            for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                for (int i = 0; i < V; ++i) acc[g][i] = 0.0f;
            }
            for (int j0 = kg; j0 < nt; j0 += kValuesInFlight * kKeyGroups) {
                KvRaw<T, C> vraw[kValuesInFlight];
#pragma unroll
                for (int u = 0; u < kValuesInFlight; ++u) {
                    const int j = min(j0 + u * kKeyGroups, nt - 1);
                    vraw[u] = load_kv_raw<T>(kv + (rows[j] + value_rows) * D + xv * V);
                }
#pragma unroll
                for (int u = 0; u < kValuesInFlight; ++u) {
                    const int j = j0 + u * kKeyGroups;
                    if (j >= nt) break;
                    float vf[V];
                    kv_raw_to_float<T, C>(vraw[u], vf, kvs);
#pragma unroll
                    for (int g = 0; g < kGroupChunk; ++g) {
                        if (gb + g < group) {
                            const float p = sc[(gb + g) * kMaxKeysPerSplit + j];
#pragma unroll
                            for (int i = 0; i < V; ++i) acc[g][i] += p * vf[i];
                        }
                    }
                }
            }
            if constexpr (kVecPerRow < 32) {
#pragma unroll
                for (int off = kVecPerRow; off < 32; off *= 2) {
#pragma unroll
                    for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                        for (int i = 0; i < V; ++i) acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], off);
                    }
                }
            }
            if (kVecPerRow >= 32 || lane < kVecPerRow) {
                const int slot = kVecPerRow >= 32 ? kg : warp;
#pragma unroll
                for (int g = 0; g < kGroupChunk; ++g) {
#pragma unroll
                    for (int i = 0; i < V; ++i) red[(slot * kGroupChunk + g) * D + xv * V + i] = acc[g][i];
                }
            }
            __syncthreads();
            for (int idx = tid; idx < kGroupChunk * D; idx += blockDim.x) {
                const int g = idx / D, x = idx % D;
                if (gb + g >= group) continue;
                float sum = 0.0f;
                for (int k = 0; k < kSlots; ++k) sum += red[(k * kGroupChunk + g) * D + x];
                float& o = os[(gb + g) * D + x];
                o = o * ml[3 * (gb + g) + 2] + sum;
            }
            __syncthreads();
        }
    }
    T* out_row = out + (int64_t{token} * h + int64_t{kh} * group) * D;
    if (active == 1) {
        for (int i = tid; i < group * D; i += blockDim.x) out_row[i] = from_float<T>(os[i] * (1.0f / ml[3 * (i / D) + 1]));
        return;
    }
    if (cluster_merge) {
        float* push = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(ml + 3 * group) + 15) / 16 * 16);
        const int stride = decode_push_stride(group, D);
        if (split > 0) {
            cluster_wait();
            const uint32_t bar = cluster_map(smem_addr(&merge_bar), 0);
            const uint32_t dst = cluster_map(smem_addr(push + (split - 1) * stride), 0);
            for (int i = 4 * tid; i < group * D; i += 4 * kDecodeThreads) {
                push_v4(dst + 4 * i, os[i], os[i + 1], os[i + 2], os[i + 3], bar);
            }
            for (int g = tid; g < group; g += kDecodeThreads) {
                push_v2(dst + 4 * (group * D + 2 * g), ml[3 * g], ml[3 * g + 1], bar);
            }
            return;
        }
        if (tid == 0) tx_barrier_arrive_expect(&merge_bar, uint32_t(active - 1) * (group * D + 2 * group) * 4);
        tx_barrier_wait(&merge_bar, 0);
        // Per head (a thread each): the splits' weights exp(m_s - m) in sc, 1 / l in ml; then the output.
        for (int g = tid; g < group; g += kDecodeThreads) {
            const float* part_ml = push + group * D + 2 * g;  // + (s - 1) * stride: split s's (m, l)
            float m = ml[3 * g];
            for (int s = 1; s < active; ++s) m = fmaxf(m, part_ml[(s - 1) * stride]);
            float* e = sc + g * kMaxKeysPerSplit;
            e[0] = expf(ml[3 * g] - m);
            float l = ml[3 * g + 1] * e[0];
            for (int s = 1; s < active; ++s) {
                e[s] = expf(part_ml[(s - 1) * stride] - m);
                l += part_ml[(s - 1) * stride + 1] * e[s];
            }
            ml[3 * g + 2] = 1.0f / l;
        }
        __syncthreads();
        for (int i = tid; i < group * D; i += kDecodeThreads) {
            const int g = i / D;
            const float* e = sc + g * kMaxKeysPerSplit;
            float o = os[i] * e[0];
            for (int s = 1; s < active; ++s) o += push[(s - 1) * stride + i] * e[s];
            out_row[i] = from_float<T>(o * ml[3 * g + 2]);
        }
        return;
    }
    for (int i = tid; i < group * D; i += blockDim.x) {
        part_o[(part0 + int64_t{i / D} * num_splits) * D + i % D] = os[i];
    }
    for (int g = tid; g < group; g += blockDim.x) {
        part_ml[(part0 + int64_t{g} * num_splits) * 2] = ml[3 * g];
        part_ml[(part0 + int64_t{g} * num_splits) * 2 + 1] = ml[3 * g + 1];
    }
    // The last of the active blocks to get here merges: every block's writes are made visible
    // device-wide before it counts itself in.
    __threadfence();
    __syncthreads();
    int* counter = done + int64_t{dec} * h_kv + kh;
    if (tid == 0) merges = atomicAdd(counter, 1) == active - 1;
    __syncthreads();
    if (!merges) return;
    __threadfence();
    const int64_t base0 = (int64_t{dec} * h + int64_t{kh} * group) * num_splits;  // split 0 of head g: + g * num_splits
    // Per head: the weight exp(m_s - m) of each split (in sc, active <= num_splits <= kMaxKeysPerSplit), 1 / l in ml.
    for (int g = warp; g < group; g += kDecodeThreads / 32) {
        const float* mlg = part_ml + (base0 + int64_t{g} * num_splits) * 2;
        float m = -INFINITY;
        for (int s = lane; s < active; s += 32) m = fmaxf(m, __ldcg(mlg + 2 * s));
        m = warp_max(m);
        float l = 0.0f;
        for (int s = lane; s < active; s += 32) {
            const float e = expf(__ldcg(mlg + 2 * s) - m);
            sc[g * kMaxKeysPerSplit + s] = e;
            l += __ldcg(mlg + 2 * s + 1) * e;
        }
        l = warp_sum(l);
        if (lane == 0) ml[3 * g] = 1.0f / l;
    }
    __syncthreads();
    for (int i = tid; i < group * D; i += blockDim.x) {
        const int g = i / D, x = i % D;
        const float* o_s = part_o + (base0 + int64_t{g} * num_splits) * D + x;
        const float* e = sc + g * kMaxKeysPerSplit;
        float o = 0.0f;
#pragma unroll 4
        for (int s = 0; s < active; ++s) o += __ldcg(o_s + int64_t{s} * D) * e[s];
        out_row[i] = from_float<T>(o * ml[3 * g]);
    }
    if (tid == 0) *counter = 0;
}

template <int D>
constexpr size_t prefill_smem_bytes() {
    return sizeof(float) * (kTileRows * (D + 1) + 2 * kKeyTile * (D + 4) + kTileRows * (kKeyTile + 1));
}

// grid (num_prefill_tiles, h_kv), kPrefillThreads threads: rows (token, head of the kv group) of
// one tile, two threads per row (each half of the key tile's scores and half of the output dims).
template <class T, class C, int D>
__global__ void __launch_bounds__(kPrefillThreads) prefill_kernel(const float* q, const C* kv, KvScale kvs, T* out,
                                                                  PagedBatchCuda b,
                                                                  const int32_t* tiles, int tile_tokens, int h,
                                                                  int h_kv, float scale) {
    constexpr int V = kVec<T>;
    constexpr int kHalf = D / 2;
    constexpr int kQStride = D + 1, kKStride = D + 4, kSStride = kKeyTile + 1;
    extern __shared__ float pre_smem[];
    float* qs = pre_smem;                        // [kTileRows][kQStride]
    float* ks = qs + kTileRows * kQStride;       // [kKeyTile][kKStride]
    float* vs = ks + kKeyTile * kKStride;        // [kKeyTile][kKStride]
    float* ss = vs + kKeyTile * kKStride;        // [kTileRows][kSStride]
    const int kh = blockIdx.y, tid = threadIdx.x;
    const int group = h / h_kv;
    const int r = tiles[2 * blockIdx.x], i0 = tiles[2 * blockIdx.x + 1];
    const int past = b.past_len[r], t_start = b.token_start[r];
    const int ntok = min(tile_tokens, b.new_len[r] - i0);
    const int rows = ntok * group;
    const int kmax = past + i0 + ntok;  // keys [0, kmax) are visible to some row of the tile
    const int row = tid / 2, half = tid % 2;
    const bool active = row < rows;
    const int qpos = active ? past + i0 + row / group : -1;  // inactive rows see no key

    for (int idx = tid; idx < rows * D; idx += blockDim.x) {
        const int rr = idx / D, x = idx % D;
        const int token = t_start + i0 + rr / group, head = kh * group + rr % group;
        qs[rr * kQStride + x] = q[(int64_t{token} * h + head) * D + x];
    }
    float acc[kHalf];
#pragma unroll
    for (int x = 0; x < kHalf; ++x) acc[x] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int k0 = 0; k0 < kmax; k0 += kKeyTile) {
        const int nk = min(kKeyTile, kmax - k0);
        __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
        for (int idx = tid; idx < nk * (D / V); idx += blockDim.x) {
            const int j = idx / (D / V), xv = idx % (D / V);
            float f[V];
            load_kv_vec<T>(kv_row(kv, b, r, k0 + j, 0, kh, h_kv, D) + xv * V, f, kvs);
#pragma unroll
            for (int i = 0; i < V; ++i) ks[j * kKStride + xv * V + i] = f[i];
            load_kv_vec<T>(kv_row(kv, b, r, k0 + j, 1, kh, h_kv, D) + xv * V, f, kvs);
#pragma unroll
            for (int i = 0; i < V; ++i) vs[j * kKStride + xv * V + i] = f[i];
        }
        __syncthreads();
        constexpr int kJ = kKeyTile / 2;
        float s[kJ];
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) s[jj] = 0.0f;
        if (active) {
            const float* qrow = qs + row * kQStride;
            for (int x = 0; x < D; x += 4) {
                const float q0 = qrow[x], q1 = qrow[x + 1], q2 = qrow[x + 2], q3 = qrow[x + 3];
#pragma unroll
                for (int jj = 0; jj < kJ; ++jj) {
                    const float4 k4 = *reinterpret_cast<const float4*>(ks + (half * kJ + jj) * kKStride + x);
                    s[jj] += q0 * k4.x + q1 * k4.y + q2 * k4.z + q3 * k4.w;
                }
            }
        }
        float tile_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) {
            const int j = half * kJ + jj;
            s[jj] = (j < nk && k0 + j <= qpos) ? s[jj] * scale : -INFINITY;
            tile_max = fmaxf(tile_max, s[jj]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        const float m_new = fmaxf(m, tile_max);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no visible key yet: keep everything at 0
        const float corr = expf(m - m_use);
        float psum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) {
            const float e = expf(s[jj] - m_use);
            ss[row * kSStride + half * kJ + jj] = e;
            psum += e;
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l = l * corr + psum;
        m = m_new;
        __syncwarp();  // both halves of the row's probabilities are in ss
        if (active) {
#pragma unroll
            for (int x = 0; x < kHalf; ++x) acc[x] *= corr;
            const float* srow = ss + row * kSStride;
            for (int j = 0; j < nk; ++j) {
                const float p = srow[j];
                const float* vrow = vs + j * kKStride + half * kHalf;
#pragma unroll
                for (int x = 0; x < kHalf; x += 4) {
                    const float4 v4 = *reinterpret_cast<const float4*>(vrow + x);
                    acc[x] += p * v4.x;
                    acc[x + 1] += p * v4.y;
                    acc[x + 2] += p * v4.z;
                    acc[x + 3] += p * v4.w;
                }
            }
        }
    }
    if (active) {
        const int token = t_start + i0 + row / group, head = kh * group + row % group;
        T* dst = out + (int64_t{token} * h + head) * D + half * kHalf;
        const float inv = 1.0f / l;
#pragma unroll
        for (int x = 0; x < kHalf; ++x) dst[x] = from_float<T>(acc[x] * inv);
    }
}

// What a decode_kernel instantiation may launch with on the current GPU (asked once: one kind of GPU per
// process): clusters where the GPU launches them and the kernels were built from sm_90 or later PTX
// (kernels_ptx_version: older code traps on the cluster path, even JIT-compiled for a Hopper), and
// the most dynamic shared memory a block may opt into.
struct DecodeLaunchLimits {
    bool clusters = false;
    size_t max_dynamic_smem = 0;
};

template <class T, class C, int D>
const DecodeLaunchLimits& decode_launch_limits() {
    static const DecodeLaunchLimits limits = [] {
        int device = 0, clusters = 0, optin = 0;
        CHECK_CUDA(cudaGetDevice(&device));
        CHECK_CUDA(cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device));
        CHECK_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        cudaFuncAttributes attributes = {};
        CHECK_CUDA(cudaFuncGetAttributes(&attributes, decode_kernel<T, C, D>));
        DecodeLaunchLimits l;
        l.clusters = clusters != 0 && kernels_ptx_version() >= 90;
        l.max_dynamic_smem = static_cast<size_t>(optin) - attributes.sharedSizeBytes;
        return l;
    }();
    return limits;
}

template <class T, class C, int D>
void launch_attend(const AttentionWork& w, const PagedBatchCuda& b, const float* q, const T* qkv, const QkPrep<T>& prep,
                   C* kv, KvScale kvs, T* out, int h, int h_kv, float scale, const AttentionScratch& scratch,
                   cudaStream_t stream) {
    const int group = h / h_kv;
    static_assert(kTcRows == kTileRows, "the tensor-core kernel takes the plan's tiles of kTileRows query rows");
    // The tensor-core prefill reads a T cache and an FP8 one (attention_prefill_tc.cuh).
    if constexpr (tc_prefill_supported<T, D>()) {
        if (w.num_prefill_tiles > 0) launch_prefill_tc<T, C, D>(w, b, q, kv, kvs, out, h, h_kv, scale, stream);
    } else if (w.num_prefill_tiles > 0) {
        constexpr size_t smem = prefill_smem_bytes<D>();
        static const bool configured = [] {
            CHECK_CUDA(cudaFuncSetAttribute(prefill_kernel<T, C, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
            return true;
        }();
        (void)configured;
        prefill_kernel<T, C, D><<<dim3(w.num_prefill_tiles, h_kv), kPrefillThreads, smem, stream>>>(
            q, kv, kvs, out, b, w.prefill_tiles, w.tile_tokens, h, h_kv, scale);
        CHECK_LAUNCH("prefill_kernel");
    }
    if (w.num_decode > 0) {
        const size_t smem = sizeof(int64_t) * kMaxKeysPerSplit +
                            sizeof(float) * (size_t{3} * group + size_t{2} * group * D + size_t(group) * kMaxKeysPerSplit +
                                             size_t{decode_red_slots<T, D>()} * kGroupChunk * D);
        float* part_o = scratch.partial;
        float* part_ml = scratch.partial + int64_t{w.num_decode} * h * w.num_splits * D;
        // Prefetch where few blocks run (a small batch: each block's chain of round trips is the time).
        const bool prefetch = int64_t{w.num_decode} * h_kv <= kPrefetchMaxHeads;
        // Where the GPU launches clusters (Hopper), a request's splits go in clusters of up to
        // kDecodeMaxCluster (a power of two; the grid is rounded up to whole clusters, the extra blocks
        // return at once).
        const DecodeLaunchLimits& limits = decode_launch_limits<T, C, D>();
        int cluster = 1;
        if (w.num_splits > 1 && limits.clusters) {
            while (cluster < std::min(w.num_splits, kDecodeMaxCluster)) cluster *= 2;
        }
        // Split 0's push buffer: the other splits' partial results (a cluster smaller, or none, where
        // they would pass kMaxPushBytes or the block the GPU's shared memory).
        auto push_bytes = [&](int c) { return sizeof(float) * size_t(c - 1) * decode_push_stride(group, D) + 16; };
        auto fits = [&](int c) {
            return push_bytes(c) <= kMaxPushBytes && smem + push_bytes(c) <= limits.max_dynamic_smem;
        };
        while (cluster > 1 && !fits(cluster)) cluster /= 2;
        const size_t smem_total = smem + (cluster > 1 ? push_bytes(cluster) : 0);
        auto* kernel = prefetch ? decode_kernel<T, C, D, kDecodeSmallBatchMinBlocks> : decode_kernel<T, C, D>;
        static int configured_bytes[2] = {0, 0};  // per instantiation: [prefetch]
        int& configured = configured_bytes[prefetch];
        if (static_cast<int>(smem_total) > configured && smem_total > 48 * 1024) {
            CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem_total)));
            configured = static_cast<int>(smem_total);
        }
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3(w.num_decode, h_kv, (w.num_splits + cluster - 1) / cluster * cluster);
        config.blockDim = dim3(kDecodeThreads);
        config.dynamicSmemBytes = smem_total;
        config.stream = stream;
        cudaLaunchAttribute attribute = {};
        attribute.id = cudaLaunchAttributeClusterDimension;
        attribute.val.clusterDim.x = 1;
        attribute.val.clusterDim.y = 1;
        attribute.val.clusterDim.z = static_cast<unsigned>(cluster);
        config.attrs = &attribute;
        config.numAttrs = cluster > 1 ? 1 : 0;
        CHECK_CUDA(cudaLaunchKernelEx(&config, kernel, q, qkv, prep, kv, kvs, b, w.decode_requests,
                                      w.decode_identity, h, h_kv, scale, w.num_splits, cluster, prefetch,
                                      part_o, part_ml, scratch.decode_done, out));
    }
}


#define TRTLLM_ATTEND_SIGNATURE(T, C, D)                                                                      \
    void launch_attend<T, C, D>(const AttentionWork&, const PagedBatchCuda&, const float*, const T*, const QkPrep<T>&, \
                                C*, KvScale, T*, int, int, float, const AttentionScratch&, cudaStream_t)
#define TRTLLM_INSTANTIATE_ATTEND(T, C)                                                                          \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 8);                                                                   \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 16);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 32);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 64);                                                                  \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 128);                                                                 \
    template TRTLLM_ATTEND_SIGNATURE(T, C, 256);

// In the translation units that call launch_attend without instantiating it.
#define TRTLLM_EXTERN_ATTEND(T, C)                                                                               \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 8);                                                            \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 16);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 32);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 64);                                                           \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 128);                                                          \
    extern template TRTLLM_ATTEND_SIGNATURE(T, C, 256);

}  // namespace trtllm::kernels::attn
