#include "gemm/weight_only_cuda.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"

namespace trtllm::kernels {
namespace {

using cuda::from_float;
using cuda::to_float;

constexpr int kGemvWarps = 4;
// The schedule, per m bound M (measured per 8B layer at m = 1 on cold weights, Nsight Compute,
// docs/cuda_backend.md "Session 8"). At m = 1 the GEMV is latency-bound (neither the ALU pipe nor
// DRAM passes ~60%), so it loads x with the weights (below) and caps registers at 80 for 6 blocks
// per SM (the kernel dequantizes 8 inputs at a time to fit): int8 takes 2 rows per warp and 2
// vectors in flight per row (95.0 us), int4 4 rows and 1 vector (int4 71.0, AWQ 73.4 us, against
// 83.6 and 94.8 with 2 rows, 4 vectors and 116 registers). Larger m: 2 rows per warp, sharing
// each x load; 4 vectors in flight at m <= 2, 2 where the FMAs of many rows of x dominate anyway.
template <int BITS, int M>
constexpr int gemv_rows() { return M == 1 && BITS == 4 ? 4 : 2; }
template <int BITS, int M>
constexpr int gemv_unroll() { return M == 1 ? (BITS == 4 ? 1 : 2) : M <= 2 ? 4 : 2; }
template <int BITS, int M>
constexpr int gemv_min_blocks() { return M == 1 ? 6 : 1; }

// Two values of the activation dtype in one 32-bit register (.x in the low half): the
// dequantization runs on pairs, as the hardware's 16-bit vector math does.
template <class T>
using Pair = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;

template <class T>
__device__ __forceinline__ Pair<T> as_pair(uint32_t bits) {
    Pair<T> p;
    *reinterpret_cast<uint32_t*>(&p) = bits;
    return p;
}

template <class T>
__device__ __forceinline__ uint32_t as_bits(Pair<T> p) {
    return *reinterpret_cast<uint32_t*>(&p);
}

// Correctly rounded products (mul.rn.{bf16x2,f16x2}): the float32 product of two 16-bit values is
// exact, so this is the op set's "float32 product, one rounding to the activation dtype".
template <class T>
__device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
    return as_bits<T>(__hmul2(as_pair<T>(a), as_pair<T>(b)));
}

template <class T>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
    return as_bits<T>(__hsub2(as_pair<T>(a), as_pair<T>(b)));
}

template <class T>
__device__ __forceinline__ float2 to_float2(uint32_t bits) {
    if constexpr (std::is_same_v<T, __half>) {
        return __half22float2(as_pair<T>(bits));
    } else {  // bfloat16 is the upper half of a float32
        return make_float2(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
    }
}

// 4 bytes of int4 weights -> 4 pairs of dequantized weights: nibbles p and p + 4 are pair p, scaled
// by scale_even (p = 0, 2) or scale_odd (p = 1, 3). The interleaved layout passes one group's scale
// twice (word q of a 16-byte vector holds inputs 8q..8q+7 in input order); the tile layout passes
// rows g and g + 8 (layouts in the header). A nibble u becomes the exact 16-bit value 128 + u
// (bfloat16) / 1024 + u (float16) by or-ing in the exponent; minus 136 / 1032 gives q.
template <class T>
__device__ __forceinline__ void dequant_int4_word(uint32_t word, uint32_t scale_even, uint32_t scale_odd,
                                                  uint32_t (&w)[4]) {
    constexpr bool kHalf = std::is_same_v<T, __half>;
    constexpr uint32_t kMagic = kHalf ? 0x64006400u : 0x43004300u;
    constexpr uint32_t kOffset = kHalf ? 0x64086408u : 0x43084308u;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        // (word & mask) | magic in one LOP3: written as C, nvcc emits an AND and an OR.
        uint32_t u;
        asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(u) : "r"(word >> (4 * j)), "n"(0x000f000fu), "n"(kMagic));
        w[j] = mul2<T>(sub2<T>(u, kOffset), (j & 1) ? scale_odd : scale_even);
    }
}

// 4 bytes of int8 weights (4 inputs, offset binary) -> 2 dequantized pairs. float16: 1024 + u is
// exact in a half, so a byte permute builds a pair; bfloat16 (8-bit significand) goes through
// float32's 2^23 + u and keeps the upper halves (q is exact in bfloat16).
template <class T>
__device__ __forceinline__ void dequant_int8_word(uint32_t word, uint32_t scale2, uint32_t (&w)[2]) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        uint32_t qpair;
        if constexpr (std::is_same_v<T, __half>) {
            const uint32_t u = __byte_perm(word, 0x64646464u, j == 0 ? 0x4140u : 0x4342u);
            qpair = sub2<T>(u, 0x64806480u);  // - 1152
        } else {
            const float lo = __uint_as_float(__byte_perm(word, 0x4b000000u, 0x7440u | (2 * j))) - 8388736.0f;
            const float hi = __uint_as_float(__byte_perm(word, 0x4b000000u, 0x7440u | (2 * j + 1))) - 8388736.0f;
            qpair = __byte_perm(__float_as_uint(lo), __float_as_uint(hi), 0x7632u);
        }
        w[j] = mul2<T>(qpair, scale2);
    }
}

template <class T, int BITS>
struct Dequant {
    static constexpr int kInputs = 128 / BITS;  // inputs per 16-byte weight vector
    static constexpr int kPairs = kInputs / 2;
    static constexpr int kChunks = kInputs / 8;  // 8-input chunks: one 16-byte load of activations each
    // Inputs 8c..8c+7 of the vector: one int4 word or two int8 words -> 4 dequantized pairs.
    __device__ __forceinline__ static void chunk(const uint4 v, int c, uint32_t scale2, uint32_t (&w)[4]) {
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
        if constexpr (BITS == 4) {
            dequant_int4_word<T>(words[c], scale2, scale2, w);
        } else {
            dequant_int8_word<T>(words[2 * c], scale2, reinterpret_cast<uint32_t(&)[2]>(w[0]));
            dequant_int8_word<T>(words[2 * c + 1], scale2, reinterpret_cast<uint32_t(&)[2]>(w[2]));
        }
    }
    __device__ __forceinline__ static void run(const uint4 v, uint32_t scale2, uint32_t (&w)[kPairs]) {
#pragma unroll
        for (int c = 0; c < kChunks; ++c) chunk(v, c, scale2, reinterpret_cast<uint32_t(&)[4]>(w[4 * c]));
    }
};

// 8 activations (4 pairs) of a 16-byte load.
__device__ __forceinline__ void unpack_pairs(const uint4 v, uint32_t (&out)[4]) {
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
}

// The group of weight vector v, v / d for d vectors per group, as one multiply-high:
// floor((2v + 1) * ceil(2^32 / 2d) / 2^32) (exact while (2v + 1) * 2d < 2^32, which
// check_weight_only_gemm's bound on k ensures). The GEMV's integer division was ~20 instructions per
// vector.
__host__ __device__ constexpr uint32_t group_magic(uint32_t vecs_per_group) {
    return static_cast<uint32_t>(((uint64_t{1} << 32) + 2 * vecs_per_group - 1) / (2 * vecs_per_group));
}
__device__ __forceinline__ int vector_group(int v, uint32_t magic) {
    return static_cast<int>(__umulhi(2 * static_cast<uint32_t>(v) + 1, magic));
}

template <class T>
__device__ __forceinline__ uint32_t scale_pair(const T* scale, int64_t index) {
    const uint32_t s = *reinterpret_cast<const uint16_t*>(scale + index);
    return s | (s << 16);
}

// One sweep of a warp over its R rows: U vectors per row at lanes' v0 + 32u, and at m = 1 their x
// (and pre_quant_scale) chunks, loaded together (`load`), then dequantized and multiplied (`compute`).
// At m = 1 x is loaded with the weights: loaded at its use it was a second round trip after the
// weights' (Nsight Compute: 40-60% of the long-scoreboard stalls of the int4 / int8 GEMV waited on it).
template <class T, int BITS, int M, int R, int U>
struct Sweep {
    using D = Dequant<T, BITS>;
    static constexpr bool kPrefetchX = M == 1;
    uint4 w[U][R];
    uint4 x[kPrefetchX ? U : 1][D::kChunks], pre[kPrefetchX ? U : 1][D::kChunks];

    __device__ __forceinline__ void load(int v0, int num_vecs, const uint8_t* const (&rows)[R], const T* xs,
                                         const T* pres) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int v = v0 + 32 * u;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                w[u][r] = v < num_vecs ? __ldcs(reinterpret_cast<const uint4*>(rows[r] + int64_t{v} * 16)) : uint4{};
            }
        }
        if constexpr (kPrefetchX) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int v = v0 + 32 * u;
                if (v >= num_vecs) break;
#pragma unroll
                for (int c = 0; c < D::kChunks; ++c) {
                    x[u][c] = *reinterpret_cast<const uint4*>(xs + v * D::kInputs + 8 * c);
                    if (pres != nullptr) pre[u][c] = *reinterpret_cast<const uint4*>(pres + v * D::kInputs + 8 * c);
                }
            }
        }
    }

    __device__ __forceinline__ void compute(int v0, int num_vecs, const T* const (&row_scales)[R], uint32_t group_magic,
                                            const T* xs, const T* pres, int m, int k, float (&acc)[M][R]) const {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int v = v0 + 32 * u;
            if (v >= num_vecs) break;
            const int k0 = v * D::kInputs;
            const int group = vector_group(v, group_magic);
            uint32_t scale2[R];
#pragma unroll
            for (int r = 0; r < R; ++r) scale2[r] = scale_pair(row_scales[r], group);
            // Chunk by chunk of 8 inputs: only one chunk's dequantized pairs are live, which keeps
            // the registers to the loads in flight.
#pragma unroll
            for (int c = 0; c < D::kChunks; ++c) {
                constexpr int P = 4;
                const int kq = k0 + 8 * c;
                uint32_t wd[R][P];
#pragma unroll
                for (int r = 0; r < R; ++r) D::chunk(w[u][r], c, scale2[r], wd[r]);
                uint32_t pre_pairs[P];
                if (pres != nullptr) {
                    if constexpr (kPrefetchX) {
                        unpack_pairs(pre[u][c], pre_pairs);
                    } else {
                        unpack_pairs(*reinterpret_cast<const uint4*>(pres + kq), pre_pairs);
                    }
                }
#pragma unroll
                for (int mi = 0; mi < M; ++mi) {
                    if (mi >= m) break;
                    uint32_t xp[P];
                    if constexpr (kPrefetchX) {
                        unpack_pairs(x[u][c], xp);
                    } else {
                        unpack_pairs(*reinterpret_cast<const uint4*>(xs + int64_t{mi} * k + kq), xp);
                    }
                    if (pres != nullptr) {  // step 1 of the op: x' = round(x * pre_quant_scale)
#pragma unroll
                        for (int i = 0; i < P; ++i) xp[i] = mul2<T>(xp[i], pre_pairs[i]);
                    }
#pragma unroll
                    for (int i = 0; i < P; ++i) {
                        const float2 xf = to_float2<T>(xp[i]);
#pragma unroll
                        for (int r = 0; r < R; ++r) {
                            const float2 wf = to_float2<T>(wd[r][i]);
                            acc[mi][r] = fmaf(wf.x, xf.x, acc[mi][r]);
                            acc[mi][r] = fmaf(wf.y, xf.y, acc[mi][r]);
                        }
                    }
                }
            }
        }
    }
};

// y[mi, row] for mi < m <= M and rows of this warp. Grid: ceil(n / (kGemvWarps * R)).
// Lane l reads 16-byte vectors l, l + 32, ... of each of its rows (coalesced 512-byte segments),
// dequantizes them once and uses them for all m rows of x. (Issuing the next sweep's loads before
// the current sweep's math, in a second set of registers, was slower: docs/cuda_backend.md, session 9.)
template <class T, class TY, int BITS, int M>
__global__ void __launch_bounds__(kGemvWarps * 32, gemv_min_blocks<BITS, M>())
    weight_only_gemv_kernel(const T* __restrict__ x, const uint8_t* __restrict__ w, const T* __restrict__ scale,
                            const T* __restrict__ pre, const T* __restrict__ bias, TY* __restrict__ y, int m, int n,
                            int k, int groups, uint32_t group_magic) {
    using D = Dequant<T, BITS>;
    constexpr int R = gemv_rows<BITS, M>();
    constexpr int U = gemv_unroll<BITS, M>();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
    if (row0 >= n) return;
    const int64_t row_bytes = int64_t{k} * BITS / 8;
    const int num_vecs = k / D::kInputs;
    const uint8_t* rows[R];
    const T* row_scales[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = min(row0 + r, n - 1);  // a row past n is computed, not stored
        rows[r] = w + row * row_bytes;
        row_scales[r] = scale + int64_t{row} * groups;
    }
    float acc[M][R];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[mi][r] = 0.0f;
    }
    for (int v0 = lane; v0 < num_vecs; v0 += 32 * U) {
        Sweep<T, BITS, M, R, U> s;
        s.load(v0, num_vecs, rows, x, pre);
        s.compute(v0, num_vecs, row_scales, group_magic, x, pre, m, k, acc);
    }
#pragma unroll
    for (int mi = 0; mi < M; ++mi) {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[mi][r] = cuda::warp_sum(acc[mi][r]);
    }
    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = row0 + r;
        if (row >= n) break;
        const float b = bias != nullptr ? to_float(bias[row]) : 0.0f;
#pragma unroll
        for (int mi = 0; mi < M; ++mi) {
            if (mi < m) y[int64_t{mi} * n + row] = from_float<TY>(acc[mi][r] + b);
        }
    }
}

// ---- the mma-tile layout (weight_only_cuda.h): the GEMV on the tensor cores -------------------
// A 512-byte tile is the A operand of four (int4: 16 rows x 64 inputs) or two (int8: 16 x 32)
// mma.m16n8k16; lane l = 4g + t holds bytes 16l..16l+15: int4 word j, int8 words 2j and 2j + 1
// feed mma j. They dequantize into the 4 A registers exactly as the CUDA-core GEMV does (int4:
// lop3, subtract; int8: byte permutes; then the multiply by the row's group scale; pairs 0 and 2
// are row g, 1 and 3 row g + 8), so the tensor cores see the op's w = round(q * s); they take the
// float32 products and sums off the CUDA cores. The tile permutes k the same way for w and x (mma
// j of lane t: inputs TI c + TI/4 t + 4j .. +3 for TI inputs a tile), so a lane's B registers are
// TI/4 consecutive inputs of x: two (int4) or one (int8) 16-byte loads. x's rows are B's 8
// columns (NB groups of 8 rows for m <= 16). Each step's products go to a fresh float32
// accumulator before the running sum, as the quantized GEMV does, so the sum does not depend on
// how the MMA keeps partial sums.
// Measured against the CUDA-core GEMV (8B layer shapes, back-to-back on cold weights, H100), us per
// layer: int4 AWQ g128 m = 1 70 vs 68, m = 2 72 vs 126, m = 4 72 vs 190, m = 8 106 vs 327; int8 per
// channel m = 1 94 vs 91, m = 4 95 vs 145, m = 8 95 vs 245.
constexpr int kTileRows = 16, kTileBytes = 512;
template <int BITS> constexpr int tile_inputs() { return BITS == 4 ? 64 : 32; }

template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same_v<T, __half>) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// mma j's A registers from a lane's four words of a tile (pair p: row g, + 8 if p is odd; inputs
// kk, + 2 if p >= 2, and the next).
template <class T, int BITS>
__device__ __forceinline__ void dequant_tile_mma(const uint32_t (&words)[4], int j, uint32_t scale_g, uint32_t scale_h,
                                                 uint32_t (&a)[4]) {
    if constexpr (BITS == 4) {
        dequant_int4_word<T>(words[j], scale_g, scale_h, a);
    } else {
        uint32_t row_g[2], row_h[2];
        dequant_int8_word<T>(words[2 * j], scale_g, row_g);
        dequant_int8_word<T>(words[2 * j + 1], scale_h, row_h);
        a[0] = row_g[0], a[1] = row_h[0], a[2] = row_g[1], a[3] = row_h[1];
    }
}

// Warps, and 2 tiles in flight per warp: more warps where x * pre_quant_scale adds registers, and
// for int8, whose tiles hold half int4's inputs (measured per 8B layer at m = 1, H100: AWQ 16 x 2
// 70.1 us, 8 x 2 73.9, 8 x 4 72.8; int8 per channel 16 x 2 94.3, 8 x 4 109.1, 8 x 2 107.8, 4 x 4
// 152.2). int4 without a pre_quant_scale at m <= 8 takes its own shapes (launch_tile_gemv).
template <int BITS, int NB, bool PRE> constexpr int tile_gemv_warps() { return PRE || (BITS == 8 && NB == 1) ? 16 : 8; }
constexpr int kTileUnroll = 2;
// At m <= 8: int8 three of its 16-warp blocks per SM (at most 42 registers; ptxas chose 42 unasked,
// which leaves two); with a pre_quant_scale two (64 registers; ptxas took 70-75 unbounded); int4
// without one takes its warps, tiles and bound from launch_tile_gemv, by grid size. 0: no bound (a
// bound of 1 changes ptxas's register allocation).
template <int BITS, int NB, bool PRE> constexpr int tile_gemv_min_blocks() {
    return NB != 1 ? 0 : PRE ? 2 : BITS == 8 ? 3 : 0;
}

// One step's products on the tensor cores into a fresh accumulator (`step`, zeroed here; the caller
// adds it to its sums): A is the lane's 16 bytes of the tile dequantized, B its TI / 4 inputs of x
// row 8 nb + g as pairs (mma j: b[2j], b[2j + 1]), times the pre_quant_scale `pv` where there is one.
template <class T, int BITS, int NB, bool PRE>
__device__ __forceinline__ void tile_step_products(const uint4 (&xv)[NB][tile_inputs<BITS>() / 32],
                                                   const uint4 (&pv)[tile_inputs<BITS>() / 32], const uint4 wv,
                                                   uint32_t sg, uint32_t sh, float (&step)[NB][4]) {
    constexpr int kMmas = tile_inputs<BITS>() / 16, kXVecs = tile_inputs<BITS>() / 32;
    uint32_t b[NB][4 * kXVecs];
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int h = 0; h < kXVecs; ++h) {
            unpack_pairs(xv[nb][h], reinterpret_cast<uint32_t(&)[4]>(b[nb][4 * h]));
            if constexpr (PRE) {  // step 1 of the op: x' = round(x * pre_quant_scale)
                uint32_t pp[4];
                unpack_pairs(pv[h], pp);
#pragma unroll
                for (int i = 0; i < 4; ++i) b[nb][4 * h + i] = mul2<T>(b[nb][4 * h + i], pp[i]);
            }
        }
    }
    const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int i = 0; i < 4; ++i) step[nb][i] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kMmas; ++j) {
        uint32_t a[4];
        dequant_tile_mma<T, BITS>(words, j, sg, sh, a);
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) mma_m16n8k16<T>(step[nb], a, b[nb][2 * j], b[nb][2 * j + 1]);
    }
}

// y[mi, row] for mi < m, m > 8 (m <= 8: weight_only_decode_tile_gemv_kernel below). Grid: (chunks of
// 16 rows of x, n / 16 tile rows); a block takes one tile row for its chunk's m <= 8 NB rows. The
// chunks of one tile row are neighbours in launch order, so past the first they read the tiles from
// the L2. The warps split the k tiles into contiguous runs
// and their sums are added in warp order (deterministic). CHUNKED: m > 16 (its own instantiation, so
// that the m <= 16 kernel's code stays as it was: the chunk offsets cost it registers and 2-3%).
template <class T, class TY, int BITS, int NB, bool PRE, bool CHUNKED = false>
__global__ void __launch_bounds__(tile_gemv_warps<BITS, NB, PRE>() * 32, tile_gemv_min_blocks<BITS, NB, PRE>())
    weight_only_tile_gemv_kernel(const T* x, const uint8_t* __restrict__ w, const T* __restrict__ scale,
                                 const T* __restrict__ pre, const T* __restrict__ bias, TY* __restrict__ y, int m,
                                 int n, int k, int groups, uint32_t group_magic) {
    constexpr int W = tile_gemv_warps<BITS, NB, PRE>(), U = kTileUnroll;
    constexpr int TI = tile_inputs<BITS>(), kXVecs = TI / 32;  // a lane's x: TI / 4 inputs
    static_assert(W >= 4 * NB, "a warp per accumulator register and column group adds the warps' sums");
    __shared__ float partial[W][NB][4][32];  // lane-minor: conflict-free stores and loads
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = blockIdx.y * kTileRows;
    if constexpr (CHUNKED) {  // this block's chunk of x and y
        x += int64_t{blockIdx.x} * kTileRows * k;
        y += int64_t{blockIdx.x} * kTileRows * n;
        m = min(m - static_cast<int>(blockIdx.x) * kTileRows, kTileRows);
    }
    const int steps = k / TI, per_warp = (steps + W - 1) / W;
    const int s0 = warp * per_warp, s1 = min(steps, s0 + per_warp);
    const uint8_t* tiles = w + int64_t{blockIdx.y} * steps * kTileBytes + lane * 16;
    const T* scale_g = scale + int64_t{row0 + g} * groups;
    const T* scale_h = scale_g + int64_t{8} * groups;
    // With a pre_quant_scale every lane loads x and the scale, unpredicated: a row past m reads row
    // m - 1 (B's column g then reaches only output columns no one stores), a step past the run
    // repeats its last tile (its sums are not added). Zeroing and predicates cost more there than
    // the loads: AWQ 8B layer 65-66 vs 70 us (scripts/bench_weight_only.py). Without one, the same
    // change cost 57 -> 64 us, so those lanes keep their predicated loads.
    const T* x_rows[NB];
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) x_rows[nb] = x + int64_t{min(8 * nb + g, m - 1)} * k + TI / 4 * t;
    // A step's weights, scales and pre_quant_scale (which no kernel writes), then its x.
    uint4 wv[U], pv[U][kXVecs];
    uint32_t sg[U], sh[U];
    auto load_weights = [&](int s) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const bool load = PRE || s + u < s1;
            const int su = PRE ? min(s + u, s1 - 1) : s + u;
            const int group = load ? vector_group(su, group_magic) : 0;
            wv[u] = load ? __ldcs(reinterpret_cast<const uint4*>(tiles + int64_t{su} * kTileBytes)) : uint4{};
            sg[u] = scale_pair(scale_g, group);
            sh[u] = scale_pair(scale_h, group);
            if constexpr (PRE) {
#pragma unroll
                for (int h = 0; h < kXVecs; ++h) pv[u][h] = *reinterpret_cast<const uint4*>(pre + su * TI + TI / 4 * t + 8 * h);
            }
        }
    };
    float acc[NB][4] = {};
    auto step_from = [&](int s) {  // the U steps from s, their weights loaded
        uint4 xv[U][NB][kXVecs];
#pragma unroll
        for (int u = 0; u < U; ++u) {  // with the weights' loads: one round trip for all
            const bool in = s + u < s1;
            const int su = PRE ? min(s + u, s1 - 1) : s + u;
            const int k0 = su * TI + TI / 4 * t;
#pragma unroll
            for (int h = 0; h < kXVecs; ++h) {
#pragma unroll
                for (int nb = 0; nb < NB; ++nb) {
                    const int mi = 8 * nb + g;
                    if constexpr (PRE) xv[u][nb][h] = *reinterpret_cast<const uint4*>(x_rows[nb] + su * TI + 8 * h);
                    else xv[u][nb][h] = in && mi < m ? *reinterpret_cast<const uint4*>(x + int64_t{mi} * k + k0 + 8 * h) : uint4{};
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float step[NB][4];
            tile_step_products<T, BITS, NB, PRE>(xv[u], pv[u], wv[u], sg[u], sh[u], step);
            if (PRE && s + u >= s1) break;
#pragma unroll
            for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[nb][i] += step[nb][i];
            }
        }
    };
    cuda::gemv_steps_after_prior(s0, s1, U, load_weights, step_from);
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int i = 0; i < 4; ++i) partial[warp][nb][i][lane] = acc[nb][i];
    }
    __syncthreads();
    // Warp 4 nb + i adds d[i] of column group nb (row g, + 8 for i >= 2, of the tile; x row 8 nb +
    // 2t + (i & 1)) over the warps, in warp order. (One warp adding all four, with the lane's four
    // floats side by side, was a chain of 4-way bank-conflicted loads at the block's end.)
    if (warp >= 4 * NB) return;
    const int nb = warp / 4, i = warp % 4;
    const int row = row0 + g + (i >= 2 ? 8 : 0), mi = 8 * nb + 2 * t + (i & 1);
    if (mi >= m) return;
    float sum = partial[0][nb][i][lane];
    for (int v = 1; v < W; ++v) sum += partial[v][nb][i][lane];
    const float b = bias != nullptr ? to_float(bias[row]) : 0.0f;
    y[int64_t{mi} * n + row] = from_float<TY>(sum + b);
}

// The tile GEMV at m <= 8, the decode batch (one column group of the mma). At the same warps W it
// computes what weight_only_tile_gemv_kernel would, with the same products and sums in the same
// order (the same bits; int4 without a pre_quant_scale launches its own W, launch_tile_gemv, so its
// warps split the steps, and order the sums, otherwise), in fewer instructions: the weights, x and
// pre_quant_scale are read through per-lane pointers advanced a chunk of U steps at a time (a step's
// offset in the chunk is an immediate), made opaque so that the compiler cannot fold them back into
// base + 64-bit index; whole chunks run without predicates, the rest of a warp's run one step at a
// time. A tile in SASS (bf16): int4 113 -> 84 instructions, AWQ 112 -> 95, int8 94 -> 70. int4 is
// close to issue-bound: at the copy bandwidth an SM has ~160 issue slots a tile. 8B decode step,
// side by side on an H100 (session 20): int4_awq_lmh 2.346 -> 2.311 ms, int8_wo_lmh 3.580 -> 3.513.
// (Session 13's diet of the same size, in the general kernel, lost in scripts/bench_weight_only.py
// without a pre_quant_scale while the engine gained; this one was measured in the engine only.)
template <class P>
__device__ __forceinline__ P* opaque(P* p) {
    asm("" : "+l"(p));
    return p;
}

// W warps of U tiles in flight each, at least MIN_BLOCKS blocks an SM (launch_tile_gemv picks them).
template <class T, class TY, int BITS, bool PRE, int W, int U, int MIN_BLOCKS>
__global__ void __launch_bounds__(W * 32, MIN_BLOCKS)
    weight_only_decode_tile_gemv_kernel(const T* x, const uint8_t* __restrict__ w, const T* __restrict__ scale,
                                        const T* __restrict__ pre, const T* __restrict__ bias, TY* __restrict__ y,
                                        int m, int n, int k, int groups, uint32_t group_magic) {
    constexpr int TI = tile_inputs<BITS>(), kXVecs = TI / 32, kTileVecs = kTileBytes / 16;
    __shared__ float partial[W][4][32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = blockIdx.y * kTileRows;
    const int steps = k / TI, per_warp = (steps + W - 1) / W;
    const int s0 = warp * per_warp, s1 = min(steps, s0 + per_warp);
    const bool x_in = g < m;  // with a pre_quant_scale, rows past m read row m - 1 unpredicated
    int s = s0;
    const uint4* wp = opaque(reinterpret_cast<const uint4*>(w + int64_t{blockIdx.y} * steps * kTileBytes) + lane +
                             int64_t{s0} * kTileVecs);
    const T* xp = opaque(x + int64_t{PRE ? min(g, m - 1) : (x_in ? g : 0)} * k + TI / 4 * t + int64_t{s0} * TI);
    const T* pp = PRE ? opaque(pre + TI / 4 * t + int64_t{s0} * TI) : nullptr;
    const uint16_t* sgp = opaque(reinterpret_cast<const uint16_t*>(scale) + int64_t{row0 + g} * groups);
    const uint16_t* shp = opaque(sgp + int64_t{8} * groups);
    uint4 wv[U], pv[U][kXVecs];
    uint32_t sg[U], sh[U];
    auto load_weights = [&](auto steps_c) {  // steps s .. s + N - 1: weights, scales, pre_quant_scale
        constexpr int N = decltype(steps_c)::value;
#pragma unroll
        for (int u = 0; u < N; ++u) {
            wv[u] = __ldcs(wp + u * kTileVecs);
            const unsigned group = static_cast<unsigned>(vector_group(s + u, group_magic));
            const uint32_t a = sgp[group], b = shp[group];
            sg[u] = a | (a << 16);
            sh[u] = b | (b << 16);
            if constexpr (PRE) {
#pragma unroll
                for (int h = 0; h < kXVecs; ++h) pv[u][h] = *reinterpret_cast<const uint4*>(pp + u * TI + 8 * h);
            }
        }
    };
    float acc[4] = {};
    auto step_from = [&](auto steps_c) {  // steps s .. s + N - 1, their weights loaded; then the next
        constexpr int N = decltype(steps_c)::value;
        uint4 xv[N][1][kXVecs];
#pragma unroll
        for (int u = 0; u < N; ++u) {
#pragma unroll
            for (int h = 0; h < kXVecs; ++h) {
                const uint4* xa = reinterpret_cast<const uint4*>(xp + u * TI + 8 * h);
                xv[u][0][h] = PRE || x_in ? *xa : uint4{};
            }
        }
#pragma unroll
        for (int u = 0; u < N; ++u) {
            float step[1][4];
            tile_step_products<T, BITS, 1, PRE>(xv[u], pv[u], wv[u], sg[u], sh[u], step);
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[i] += step[0][i];
        }
        s += N;
        wp += N * kTileVecs;
        xp += N * TI;
        if constexpr (PRE) pp += N * TI;
    };
    constexpr auto kChunk = std::integral_constant<int, U>{};
    constexpr auto kOne = std::integral_constant<int, 1>{};
    const int chunks_end = s0 + max(s1 - s0, 0) / U * U;
    // As gemv_steps_after_prior: the first chunk's weights before the wait, the next kernel released
    // after the run.
    if (s < chunks_end) {
        load_weights(kChunk);
        cuda::wait_for_prior_kernels();
        step_from(kChunk);
        while (s < chunks_end) {
            load_weights(kChunk);
            step_from(kChunk);
        }
    } else {
        cuda::wait_for_prior_kernels();
    }
    while (s < s1) {
        load_weights(kOne);
        step_from(kOne);
    }
    cuda::let_next_kernel_start();
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][i][lane] = acc[i];
    __syncthreads();
    if (warp >= 4) return;  // warp i adds d[i], as in the general kernel
    const int i = warp;
    const int row = row0 + g + (i >= 2 ? 8 : 0), mi = 2 * t + (i & 1);
    if (mi >= m) return;
    float sum = partial[0][i][lane];
    for (int v = 1; v < W; ++v) sum += partial[v][i][lane];
    const float bv = bias != nullptr ? to_float(bias[row]) : 0.0f;
    y[int64_t{mi} * n + row] = from_float<TY>(sum + bv);
}

// out [n, k] = the dequantized weight from the tile layout, row-major. A block of 8 warps takes 8
// tiles of one tile row (16 rows x 8 TI inputs), a warp a tile: each lane dequantizes its 16 bytes
// into shared memory (rows g and g + 8, as the GEMV does), then the block writes the 16 rows with
// coalesced 16-byte stores. Stored from the lanes directly, a warp's 4-byte stores touched 32 sectors
// for 128 bytes: 672 us for the 8B gate_up, every prefill past the GEMV's rows (H100).
constexpr int kDequantTiles = 8;
template <class T, int BITS>
__global__ void __launch_bounds__(kDequantTiles * 32)
    weight_only_tile_dequantize_kernel(const uint8_t* __restrict__ w, const T* __restrict__ scale, T* __restrict__ out,
                                       int k, int group_size) {
    constexpr int TI = tile_inputs<BITS>();
    constexpr int kCols = kDequantTiles * TI, kStride = kCols + 8;  // + 8: 16-byte rows, fewer bank conflicts
    __shared__ __align__(16) T rows[kTileRows][kStride];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int steps = k / TI, groups = k / group_size;
    const int s = blockIdx.x * kDequantTiles + warp;
    const int64_t row0 = int64_t{blockIdx.y} * kTileRows;
    if (s < steps) {
        const int k0 = s * TI + TI / 4 * t;
        const uint32_t sg = scale_pair(scale, (row0 + g) * groups + k0 / group_size);
        const uint32_t sh = scale_pair(scale, (row0 + g + 8) * groups + k0 / group_size);
        const uint4 v = *reinterpret_cast<const uint4*>(w + (int64_t{blockIdx.y} * steps + s) * kTileBytes + lane * 16);
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < TI / 16; ++j) {
            uint32_t a[4];
            dequant_tile_mma<T, BITS>(words, j, sg, sh, a);
#pragma unroll
            for (int p = 0; p < 4; ++p) {  // pair p: row g (+ 8 if p odd), inputs k0 + 4j (+ 2 if p >= 2), + 1
                *reinterpret_cast<uint32_t*>(&rows[g + 8 * (p & 1)][warp * TI + TI / 4 * t + 4 * j + 2 * (p >> 1)]) = a[p];
            }
        }
    }
    __syncthreads();
    const int c0 = blockIdx.x * kCols;
    constexpr int kVecsPerRow = kCols / 8;
    for (int i = threadIdx.x; i < kTileRows * kVecsPerRow; i += blockDim.x) {
        const int r = i / kVecsPerRow, c = (i % kVecsPerRow) * 8;
        if (c0 + c < k) {
            *reinterpret_cast<uint4*>(out + (row0 + r) * k + c0 + c) = *reinterpret_cast<const uint4*>(&rows[r][c]);
        }
    }
}

template <class T, class TY, int BITS, bool PRE, int W, int U, int MIN_BLOCKS>
void launch_decode_tile_gemv(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    const dim3 grid(1, static_cast<unsigned>(w.n / kTileRows));
    cuda::launch_after_prior(
        "weight_only_decode_tile_gemv_kernel", weight_only_decode_tile_gemv_kernel<T, TY, BITS, PRE, W, U, MIN_BLOCKS>,
        grid, W * 32, 0, stream, static_cast<const T*>(x), static_cast<const uint8_t*>(w.weight),
        static_cast<const T*>(w.scale), static_cast<const T*>(w.pre_quant_scale), static_cast<const T*>(w.bias),
        static_cast<TY*>(y), static_cast<int>(m), static_cast<int>(w.n), static_cast<int>(w.k),
        static_cast<int>(w.k / w.group_size), group_magic(static_cast<uint32_t>(w.group_size / tile_inputs<BITS>())));
}

template <class T, class TY, int BITS, int NB, bool PRE, bool CHUNKED = false>
void launch_tile_gemv(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    if constexpr (NB == 1 && !CHUNKED) {
        // int4 without a pre_quant_scale (in AWQ engines every linear but o, in int4_wo engines all):
        // block bounds that leave ptxas the registers to issue all of a chunk's weight loads ahead of
        // its mmas (unbounded, 8 x 4 took 54 registers and issued two of its four loads after the first
        // tiles' math; SASS, session 21). On a grid of at most two blocks an SM (n <= 4224 on an H100:
        // the 8B o and down) 16 warps x 2 tiles, two blocks an SM (64 registers): 8-warp blocks leave
        // 4 warps on each scheduler, too few to hide the dequantize's and the mma's latencies. Larger
        // grids 8 x 4, three blocks an SM (80 registers). 8B decode step, H100, session 22: int4_wo
        // 2.518 -> 2.345 ms, int4_awq_lmh 2.327 -> 2.251 (2.212 with down's pre_quant_scale folded).
        if constexpr (BITS == 4 && !PRE) {
            if (w.n / kTileRows <= 2 * cuda::current_device_sms()) {
                launch_decode_tile_gemv<T, TY, BITS, PRE, 16, 2, 2>(w, x, y, m, stream);
            } else {
                launch_decode_tile_gemv<T, TY, BITS, PRE, 8, 4, 3>(w, x, y, m, stream);
            }
        } else {
            launch_decode_tile_gemv<T, TY, BITS, PRE, tile_gemv_warps<BITS, 1, PRE>(), kTileUnroll,
                                    tile_gemv_min_blocks<BITS, 1, PRE>()>(w, x, y, m, stream);
        }
    } else {
        const dim3 grid(static_cast<unsigned>((m + kTileRows - 1) / kTileRows), static_cast<unsigned>(w.n / kTileRows));
        cuda::launch_after_prior(
            "weight_only_tile_gemv_kernel", weight_only_tile_gemv_kernel<T, TY, BITS, NB, PRE, CHUNKED>, grid,
            tile_gemv_warps<BITS, NB, PRE>() * 32, 0, stream, static_cast<const T*>(x),
            static_cast<const uint8_t*>(w.weight), static_cast<const T*>(w.scale),
            static_cast<const T*>(w.pre_quant_scale), static_cast<const T*>(w.bias), static_cast<TY*>(y),
            static_cast<int>(m), static_cast<int>(w.n), static_cast<int>(w.k), static_cast<int>(w.k / w.group_size),
            group_magic(static_cast<uint32_t>(w.group_size / tile_inputs<BITS>())));
    }
}

template <class T, class TY, int BITS, bool PRE>
void tile_gemv_rows_bound(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    if (m <= 8) launch_tile_gemv<T, TY, BITS, 1, PRE>(w, x, y, m, stream);
    else if (m <= kTileRows) launch_tile_gemv<T, TY, BITS, 2, PRE>(w, x, y, m, stream);
    else launch_tile_gemv<T, TY, BITS, 2, PRE, true>(w, x, y, m, stream);
}

template <class T, class TY, int BITS>
void tile_gemv(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    if (w.pre_quant_scale != nullptr) tile_gemv_rows_bound<T, TY, BITS, true>(w, x, y, m, stream);
    else tile_gemv_rows_bound<T, TY, BITS, false>(w, x, y, m, stream);
}

// out [n, k] = the dequantized weight in the activation dtype, row-major (the same arithmetic as
// the GEMV). One thread per 16-byte weight vector.
template <class T, int BITS>
__global__ void weight_only_dequantize_kernel(const uint8_t* __restrict__ w, const T* __restrict__ scale, T* __restrict__ out,
                                              int64_t num_vecs, int k, int group_size) {
    using D = Dequant<T, BITS>;
    const int64_t vec = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (vec >= num_vecs) return;
    const int vecs_per_row = k / D::kInputs;
    const int64_t row = vec / vecs_per_row;
    const int k0 = static_cast<int>(vec % vecs_per_row) * D::kInputs;
    uint32_t wd[D::kPairs];
    D::run(*reinterpret_cast<const uint4*>(w + vec * 16), scale_pair(scale, row * (k / group_size) + k0 / group_size), wd);
    uint4* dst = reinterpret_cast<uint4*>(out + row * k + k0);
#pragma unroll
    for (int i = 0; i < D::kPairs / 4; ++i) dst[i] = make_uint4(wd[4 * i], wd[4 * i + 1], wd[4 * i + 2], wd[4 * i + 3]);
}

// out [rows, k] = round(x * pre_quant_scale), eight inputs per thread.
template <class T>
__global__ void pre_quant_scale_kernel(const T* __restrict__ x, const T* __restrict__ pre, T* __restrict__ out,
                                       int64_t num_vecs, int k) {
    const int64_t vec = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (vec >= num_vecs) return;
    const int k0 = static_cast<int>(vec % (k / 8)) * 8;
    const uint4 xv = reinterpret_cast<const uint4*>(x)[vec];
    const uint4 pv = *reinterpret_cast<const uint4*>(pre + k0);
    reinterpret_cast<uint4*>(out)[vec] =
        make_uint4(mul2<T>(xv.x, pv.x), mul2<T>(xv.y, pv.y), mul2<T>(xv.z, pv.z), mul2<T>(xv.w, pv.w));
}

template <class T, class TY, int BITS, int M>
void launch_gemv(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    constexpr int kRowsPerBlock = kGemvWarps * gemv_rows<BITS, M>();
    const dim3 grid(static_cast<unsigned>((w.n + kRowsPerBlock - 1) / kRowsPerBlock));
    weight_only_gemv_kernel<T, TY, BITS, M><<<grid, kGemvWarps * 32, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const uint8_t*>(w.weight), static_cast<const T*>(w.scale),
        static_cast<const T*>(w.pre_quant_scale), static_cast<const T*>(w.bias), static_cast<TY*>(y),
        static_cast<int>(m), static_cast<int>(w.n), static_cast<int>(w.k), static_cast<int>(w.k / w.group_size),
        group_magic(static_cast<uint32_t>(w.group_size / Dequant<T, BITS>::kInputs)));
    CHECK_LAUNCH("weight_only_gemv_kernel");
}

// The kernel's M is a bound on m: 1, 2, 4, 8 or 16 rows of accumulators.
template <class T, class TY, int BITS>
void gemv_rows_bound(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    if (m == 1) launch_gemv<T, TY, BITS, 1>(w, x, y, m, stream);
    else if (m == 2) launch_gemv<T, TY, BITS, 2>(w, x, y, m, stream);
    else if (m <= 4) launch_gemv<T, TY, BITS, 4>(w, x, y, m, stream);
    else if (m <= 8) launch_gemv<T, TY, BITS, 8>(w, x, y, m, stream);
    else launch_gemv<T, TY, BITS, 16>(w, x, y, m, stream);
}

template <class T, int BITS>
void gemv(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, cudaStream_t stream) {
    if (w.mma_tiles) {
        if (w.out_dtype == DType::kFloat32) tile_gemv<T, float, BITS>(w, x, y, m, stream);
        else tile_gemv<T, T, BITS>(w, x, y, m, stream);
    } else if (w.out_dtype == DType::kFloat32) {
        gemv_rows_bound<T, float, BITS>(w, x, y, m, stream);
    } else {
        gemv_rows_bound<T, T, BITS>(w, x, y, m, stream);
    }
}

// Past the GEMV's rows: dequantize into scratch, then cuBLASLt, x * pre_quant_scale by chunks of rows.
template <class T, int BITS>
void run_dequantized(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, void* scratch,
                     CublasLtGemm& gemm, cudaStream_t stream) {
    constexpr int kThreads = 256;
    T* wd = static_cast<T*>(scratch);
    const int64_t num_vecs = w.n * w.k / Dequant<T, BITS>::kInputs;
    if (w.mma_tiles) {
        const dim3 grid(static_cast<unsigned>((w.k / tile_inputs<BITS>() + kDequantTiles - 1) / kDequantTiles),
                        static_cast<unsigned>(w.n / kTileRows));
        weight_only_tile_dequantize_kernel<T, BITS><<<grid, kDequantTiles * 32, 0, stream>>>(
            static_cast<const uint8_t*>(w.weight), static_cast<const T*>(w.scale), wd, static_cast<int>(w.k),
            static_cast<int>(w.group_size));
        CHECK_LAUNCH("weight_only_tile_dequantize_kernel");
    } else {
        weight_only_dequantize_kernel<T, BITS><<<cuda::blocks_for(num_vecs, kThreads), kThreads, 0, stream>>>(
            static_cast<const uint8_t*>(w.weight), static_cast<const T*>(w.scale), wd, num_vecs, static_cast<int>(w.k),
            static_cast<int>(w.group_size));
        CHECK_LAUNCH("weight_only_dequantize_kernel");
    }
    const GemmShape shape{w.n, w.k, w.dtype, w.out_dtype, w.bias != nullptr};
    if (w.pre_quant_scale == nullptr) {
        gemm.run(shape, m, x, wd, w.bias, y, nullptr, stream);
        return;
    }
    T* xs = wd + w.n * w.k;
    for (int64_t r0 = 0; r0 < m; r0 += kWeightOnlyChunkRows) {
        const int64_t rows = std::min(kWeightOnlyChunkRows, m - r0);
        const int64_t vecs = rows * w.k / 8;
        pre_quant_scale_kernel<T><<<cuda::blocks_for(vecs, kThreads), kThreads, 0, stream>>>(
            static_cast<const T*>(x) + r0 * w.k, static_cast<const T*>(w.pre_quant_scale), xs, vecs,
            static_cast<int>(w.k));
        CHECK_LAUNCH("pre_quant_scale_kernel");
        gemm.run(shape, rows, xs, wd, w.bias, static_cast<char*>(y) + r0 * w.n * dtype_size(w.out_dtype), nullptr,
                 stream);
    }
}

template <class T>
void dispatch(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, void* scratch, CublasLtGemm& gemm,
              cudaStream_t stream, WeightOnlyPath path) {
    if (path == WeightOnlyPath::kGemv) {
        if (w.weight_bits == 4) gemv<T, 4>(w, x, y, m, stream);
        else gemv<T, 8>(w, x, y, m, stream);
    } else {
        if (w.weight_bits == 4) run_dequantized<T, 4>(w, x, y, m, scratch, gemm, stream);
        else run_dequantized<T, 8>(w, x, y, m, scratch, gemm, stream);
    }
}

}  // namespace

void check_weight_only_gemm(const WeightOnlyGemmCuda& w) {
    if (w.dtype != DType::kBFloat16 && w.dtype != DType::kFloat16) {
        throw std::invalid_argument(std::string("CUDA weight_only_linear: activations must be bfloat16 or float16, got ") +
                                    dtype_name(w.dtype));
    }
    if (w.out_dtype != w.dtype && !(w.out_dtype == DType::kFloat32 && w.bias == nullptr)) {
        throw std::invalid_argument(std::string("CUDA weight_only_linear: the output must be ") + dtype_name(w.dtype) +
                                    ", or float32 without a bias; got " + dtype_name(w.out_dtype) +
                                    (w.bias != nullptr ? " with a bias" : ""));
    }
    if (w.weight_bits != 8 && w.weight_bits != 4) {
        throw std::invalid_argument("CUDA weight_only_linear: weight_bits must be 8 or 4, got " +
                                    std::to_string(w.weight_bits));
    }
    const int64_t per_vec = 128 / w.weight_bits;
    if (w.n < 1 || w.k < per_vec || w.k % per_vec != 0 || w.group_size < per_vec || w.group_size % per_vec != 0 ||
        w.k % w.group_size != 0 || w.n >= (int64_t{1} << 31) || w.k / per_vec > (int64_t{1} << 15)) {
        throw std::invalid_argument("CUDA weight_only_linear: n = " + std::to_string(w.n) + ", k = " + std::to_string(w.k) +
                                    ", group_size = " + std::to_string(w.group_size) + " for int" +
                                    std::to_string(w.weight_bits) + ": k and group_size must be multiples of " +
                                    std::to_string(per_vec) + ", group_size must divide k, k at most " +
                                    std::to_string(per_vec << 15) + " and n below 2^31");
    }
    const int64_t tile_k = w.weight_bits == 4 ? tile_inputs<4>() : tile_inputs<8>();
    if (w.mma_tiles && (w.n % kTileRows != 0 || w.k % tile_k != 0 || w.group_size % tile_k != 0 ||
                        w.n / kTileRows > 65535)) {
        throw std::invalid_argument(std::string("CUDA weight_only_linear: layout ") + kCudaMmaTileLayout +
                                    " holds int4 (int8) with n a multiple of 16 (at most 16 x 65535) and k, "
                                    "group_size multiples of 64 (32); got int" +
                                    std::to_string(w.weight_bits) + ", n = " + std::to_string(w.n) + ", k = " +
                                    std::to_string(w.k) + ", group_size = " + std::to_string(w.group_size));
    }
    if (w.weight == nullptr || w.scale == nullptr) throw std::invalid_argument("CUDA weight_only_linear: missing weight or scale");
    for (const void* p : {w.weight, w.pre_quant_scale}) {
        if (p != nullptr && !cuda::aligned16(p)) {
            throw std::invalid_argument("CUDA weight_only_linear: weight and pre_quant_scale must be 16-byte aligned");
        }
    }
}

int64_t weight_only_gemv_max_rows(const WeightOnlyGemmCuda& w) {
    return w.mma_tiles ? kWeightOnlyTileGemvMaxRows : kWeightOnlyGemvMaxRows;
}

bool weight_only_mma_tiles_from_name(const std::string& layout) {
    if (layout == kCudaMmaTileLayout) return true;
    if (layout == kCudaWeightLayout) return false;
    throw std::invalid_argument("weight_only_linear weight_layout '" + layout +
                                "' is not runnable on the CUDA backend (needs " + kCudaWeightLayout + " or " +
                                kCudaMmaTileLayout + ": build the engine with --target cuda)");
}

const char* weight_only_path_name(WeightOnlyPath path) {
    return path == WeightOnlyPath::kGemv ? "gemv" : "dequant_gemm";
}

WeightOnlyPath weight_only_path_from_name(const std::string& name) {
    if (name == "gemv") return WeightOnlyPath::kGemv;
    if (name == "dequant_gemm") return WeightOnlyPath::kDequantGemm;
    throw std::invalid_argument("weight-only tactic '" + name + "' is not 'gemv' or 'dequant_gemm'");
}

int64_t weight_only_scratch_elems(const WeightOnlyGemmCuda& w, int64_t max_m) {
    if (max_m <= 0) return 0;
    const int64_t x_rows = w.pre_quant_scale != nullptr ? std::min(max_m, kWeightOnlyChunkRows) : 0;
    return w.n * w.k + x_rows * w.k;
}

void weight_only_gemm_cuda(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, void* scratch,
                           CublasLtGemm& gemm, cudaStream_t stream, const WeightOnlyPath* path) {
    if (m <= 0) return;
    if (!cuda::aligned16(x)) throw std::invalid_argument("CUDA weight_only_linear: x must be 16-byte aligned");
    WeightOnlyPath use = m <= kWeightOnlyDefaultGemvRows ? WeightOnlyPath::kGemv : WeightOnlyPath::kDequantGemm;
    if (path != nullptr) use = *path;
    if (m > weight_only_gemv_max_rows(w)) use = WeightOnlyPath::kDequantGemm;
    if (use == WeightOnlyPath::kDequantGemm && (scratch == nullptr || !cuda::aligned16(scratch))) {
        throw std::invalid_argument("CUDA weight_only_linear: m = " + std::to_string(m) +
                                    " needs a 16-byte aligned scratch of weight_only_scratch_elems()");
    }
    if (w.dtype == DType::kBFloat16) {
        dispatch<__nv_bfloat16>(w, x, y, m, scratch, gemm, stream, use);
    } else {
        dispatch<__half>(w, x, y, m, scratch, gemm, stream, use);
    }
}

std::vector<WeightOnlyTuned> autotune_weight_only(const WeightOnlyGemmCuda& shape, const std::vector<int64_t>& ms,
                                                  int reps) {
    if (ms.empty()) return {};
    check_weight_only_gemm(shape);
    const int64_t max_m = *std::max_element(ms.begin(), ms.end());
    const size_t esz = dtype_size(shape.dtype);
    WeightOnlyGemmCuda w = shape;
    const cuda::ColdWeights cold(static_cast<size_t>(w.n * w.k * w.weight_bits / 8));
    DeviceBuffer weight(cold.bytes());
    DeviceBuffer scale(static_cast<size_t>(w.n * (w.k / w.group_size)) * esz), pre(static_cast<size_t>(w.k) * esz);
    DeviceBuffer bias(static_cast<size_t>(w.n) * esz), x(static_cast<size_t>(max_m * w.k) * esz);
    DeviceBuffer y(static_cast<size_t>(max_m * w.n) * dtype_size(w.out_dtype));
    // Speed does not depend on the values: bytes of 0x3c give finite 16-bit numbers near 1 (fp16) / 0.01 (bf16).
    CHECK_CUDA(cudaMemset(weight.get(), 0x5a, weight.bytes()));
    for (const DeviceBuffer* b : {&scale, &pre, &bias, &x}) CHECK_CUDA(cudaMemset(b->get(), 0x3c, b->bytes()));
    w.weight = weight.get();
    w.scale = scale.get();
    w.pre_quant_scale = shape.pre_quant_scale != nullptr ? pre.get() : nullptr;
    w.bias = shape.bias != nullptr ? bias.get() : nullptr;
    DeviceBuffer scratch(static_cast<size_t>(weight_only_scratch_elems(w, max_m)) * esz);
    CublasLtGemm gemm;
    CudaStream stream;
    CudaEvent start, stop;
    auto time_path = [&](int64_t m, WeightOnlyPath path) {
        auto once = [&](int i) {
            WeightOnlyGemmCuda wi = w;
            wi.weight = cold.at(weight.get(), i);
            weight_only_gemm_cuda(wi, x.get(), y.get(), m, scratch.get(), gemm, stream.get(), &path);
        };
        for (int i = 0; i < 3; ++i) once(i);
        CHECK_CUDA(cudaEventRecord(start.get(), stream.get()));
        for (int i = 0; i < reps; ++i) once(i);
        CHECK_CUDA(cudaEventRecord(stop.get(), stream.get()));
        CHECK_CUDA(cudaEventSynchronize(stop.get()));
        float ms_total = 0.0f;
        CHECK_CUDA(cudaEventElapsedTime(&ms_total, start.get(), stop.get()));
        return ms_total * 1000.0f / static_cast<float>(std::max(1, reps));
    };
    std::vector<WeightOnlyTuned> out;
    for (const int64_t m : ms) {
        WeightOnlyTuned t;
        t.m = m;
        t.dequant_us = time_path(m, WeightOnlyPath::kDequantGemm);
        t.path = WeightOnlyPath::kDequantGemm;
        if (m <= weight_only_gemv_max_rows(w)) {
            t.gemv_us = time_path(m, WeightOnlyPath::kGemv);
            if (t.gemv_us < t.dequant_us) t.path = WeightOnlyPath::kGemv;
        }
        out.push_back(t);
    }
    return out;
}

}  // namespace trtllm::kernels
